"""The latent explorer in headless Chromium on a trained run: slider-to-new-face latency, and a screenshot of the page.

    python benchmarks/explorer.py --model runs/default --screenshot docs/explorer.png

The latency is measured in the page: from a slider's input event to the load event of the face it redraws
(request, decoding on the server, PNG, display), over --moves moves. tests/test_app.py drives the page with the
same helpers.
"""
import argparse
import statistics
import sys
import threading
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

# Move a range input and resolve with the milliseconds from its input event to the `load` of the image it redraws.
MOVE = """([slider, image, value]) => new Promise((resolve, reject) => {
  const img = document.querySelector(image), input = document.querySelector(slider);
  setTimeout(() => reject(new Error("no new image within 20 s")), 20000);
  img.addEventListener("load", () => resolve(performance.now() - start), { once: true });
  input.value = value;
  const start = performance.now();
  input.dispatchEvent(new Event("input", { bubbles: true }));
})"""


def slider_latencies(page, moves: int) -> list[float]:
    """Milliseconds per move of the first slider across its range, the first move (a warm-up) left out."""
    return [page.evaluate(MOVE, ["#sliders input[data-index='0']", "#face", str(-2.5 + 5.0 * i / moves)])
            for i in range(moves + 1)][1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder or .keras file")
    parser.add_argument("--moves", type=int, default=40, help="slider moves timed")
    parser.add_argument("--screenshot", help="PNG of the whole page to write, after a morph and an upload")
    parser.add_argument("--upload", help="image uploaded before the screenshot (default: a face the model draws)")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from vae.app.server import open_server

    server, url = open_server(args.model, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1320, "height": 900})
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        page.click("#grid img:nth-child(2)")
        size = page.evaluate("document.querySelector('#face').naturalWidth")
        times = slider_latencies(page, args.moves)
        print(f"slider to new face, {size} px model {args.model}, {len(times)} moves: median {statistics.median(times):.1f} ms, "
              f"90th percentile {float(np.percentile(times, 90)):.1f} ms, slowest {max(times):.1f} ms")
        if args.screenshot:
            page.evaluate(MOVE, ["#sliders input[data-index='1']", "#face", "1.5"])
            page.evaluate(MOVE, ["#morph-t", "#morph-face", "0.35"])
            upload = args.upload or str(Path(args.screenshot).with_suffix(".upload.png"))
            if not args.upload:  # a face the model drew, so no one's image ends up in the picture
                page.locator("#grid img:nth-child(7)").screenshot(path=upload)
            page.set_input_files("#file", upload)
            page.wait_for_function("() => /^PSNR/.test(document.getElementById('psnr').textContent)")
            page.screenshot(path=args.screenshot, full_page=True)
            if not args.upload:
                Path(upload).unlink()
            print(f"wrote {args.screenshot}")
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
