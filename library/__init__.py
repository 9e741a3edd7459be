"""lorasmith's library: options, data, models, networks glue, training, inference, tools' bodies.

One process-wide setting lives here because every entry point imports this package first:
bitsandbytes, which diffusers imports whenever it is installed, warns on CPUs with AVX512-BF16 that
it could not fetch an optional 4-bit kernel from the Hugging Face Hub. We use no 4-bit kernels and
fetch nothing from a hub, so that warning on every start would only mislead.
"""

import logging

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
