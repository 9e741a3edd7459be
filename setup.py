from setuptools import find_packages, setup

setup(
    name="lorasmith",
    version="0.1.0",
    description="LoRA training for Stable Diffusion 1.x/2.x and SDXL, kohya-compatible",
    packages=find_packages(include=["library", "library.*", "networks", "networks.*"]),
    package_data={"library.models": ["data/*"]},
    python_requires=">=3.10",
    install_requires=[line.strip() for line in open("requirements.txt") if line.strip() and not line.startswith("#")],
)
