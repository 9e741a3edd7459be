"""The end-of-run (and per-checkpoint) report: a loss-curve PNG and an HTML page.

The page lists every saved LoRA with its step, the loss around it and the sample images
made at that point, so a user can pick the best checkpoint by eye. Drawn with PIL alone:
no plotting dependency for one line chart.
"""

from __future__ import annotations

import html
import os

from PIL import Image, ImageDraw

from library import atomic
from library.atomic import atomic_path


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curve_png(losses: list[float], path: str, size=(800, 400), validation: list[dict] | None = None) -> str:
    """Raw loss (light) and its moving average (dark) against step; validation losses as orange dots."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, w - 20, 20, h - 40
    draw.rectangle([left, top, right, bottom], outline="black")
    points_v = [(v["step"], v["loss"]) for v in validation or [] if v.get("step")]
    if losses:
        lo, hi = min(losses + [v for _, v in points_v]), max(losses + [v for _, v in points_v])
        span = (hi - lo) or 1.0
        n = max(len(losses) - 1, 1)

        def xy(i, v):
            return left + (right - left) * i / n, bottom - (bottom - top) * (v - lo) / span

        for series, colour in ((losses, (170, 190, 230)), (_smooth(losses, max(1, len(losses) // 20)), (20, 60, 160))):
            points = [xy(i, v) for i, v in enumerate(series)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
        for step, value in points_v:
            x, y = xy(step - 1, value)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(230, 120, 20))
        draw.text((5, top), f"{hi:.4g}", fill="black")
        draw.text((5, bottom - 10), f"{lo:.4g}", fill="black")
        draw.text((left, bottom + 10), "step 1", fill="black")
        draw.text((right - 60, bottom + 10), f"step {len(losses)}", fill="black")
    legend = "loss (light: per step, dark: moving average" + (", orange: validation)" if points_v else ")")
    draw.text((left + 5, top + 5), legend, fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:  # a crash never leaves half a PNG under the name
        img.save(tmp, format="PNG")
    return path


def write_report(output_dir: str, output_name: str, losses: list[float], checkpoints: list[dict],
                 validation: list[dict] | None = None) -> str:
    """Write ``<output_name>_report.html`` and the loss PNG; ``checkpoints`` items: file, step, epoch, samples;
    ``validation`` items: step, epoch, kind ("step"/"epoch"), loss (library/train/validation.py)."""
    png = loss_curve_png(losses, os.path.join(output_dir, f"{output_name}_loss.png"), validation=validation)
    rows = []
    for ck in checkpoints:
        step = ck["step"]
        near = losses[max(0, step - 10) : step] if losses else []
        avg = f"{sum(near) / len(near):.4f}" if near else "-"
        images = "".join(
            f'<img src="{html.escape(os.path.relpath(p, output_dir))}" width="160" title="{html.escape(os.path.basename(p))}">'
            for p in ck.get("samples", [])
        )
        rows.append(
            f"<tr><td>{html.escape(os.path.basename(ck['file']))}</td><td>{ck.get('epoch', '')}</td>"
            f"<td>{step}</td><td>{avg}</td><td>{images}</td></tr>"
        )
    title = html.escape(output_name)
    page = f"<!doctype html><meta charset='utf-8'><title>{title} training report</title><h1>{title}</h1>"
    if losses:
        final = _smooth(losses, max(1, len(losses) // 20))[-1]
        page += f"<p>{len(losses)} steps; final moving-average loss {final:.4f}</p>"
    else:
        page += "<p>no steps yet</p>"
    page += f"<img src='{html.escape(os.path.basename(png))}'><h2>Checkpoints</h2>"
    page += "<table border=1 cellpadding=4><tr><th>file</th><th>epoch</th><th>step</th><th>loss (last 10 steps)</th><th>samples</th></tr>"
    page += "".join(rows) + "</table>"
    if validation:
        page += ("<h2>Validation loss</h2><p>held-out images, fixed timesteps and noise: comparable across steps</p>"
                 "<table border=1 cellpadding=4><tr><th>step</th><th>epoch</th><th>when</th><th>validation loss</th></tr>")
        page += "".join(f"<tr><td>{v['step']}</td><td>{v['epoch']}</td><td>{html.escape(v['kind'])}</td><td>{v['loss']:.5f}</td></tr>"
                        for v in validation) + "</table>"
    path = os.path.join(output_dir, f"{output_name}_report.html")
    atomic.write_text(path, page)
    return path
