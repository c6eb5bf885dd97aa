#!/usr/bin/env bash
# The run report in a real browser: the README's demo run (configs/tiny/lora.yaml, 60 LoRA
# steps) with evaluation by generation every 20 steps and a checkpoint every 20 steps, then:
#  1. training wrote report.html and training_loss.png at its end; `ftrun report DIR` writes
#     them again; training_loss.png is a PNG of 800 x 500;
#  2. Debian's headless Chromium loads report.html from disk (the page fetches nothing: no
#     script, src, href or url()); in the DOM it rendered, every chart's SVG path has one point
#     per logged value (loss and its smoothed curve 6, learning rate, grad norm, tokens/s 6,
#     eval loss, ROUGE-1/2/L and BLEU-4 3), the checkpoints 20, 40 and 60 are marked on each
#     chart, and 5 test predictions sit next to their labels;
#  3. its screenshot is a PNG of the window size in which the loss curve's and the grad norm
#     curve's colours are drawn. FTRUN_REPORT_SCREENSHOT=FILE keeps a copy to look at.
set -euo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_report.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
CHROMIUM=$(command -v chromium || true)
[ -n "$CHROMIUM" ] || fail "chromium is not installed: run \`bash .ci/install-deps\` (Debian's chromium)"

"$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$T/run" --set training_args.save_steps=20 \
  --set training_args.eval_strategy=steps --set training_args.eval_steps=20 \
  --set training_args.predict_with_generate=true --set training_args.generation_config.max_new_tokens=16 \
  > "$T/train.log" 2>&1 || { cat "$T/train.log"; fail "training"; }
[ -f "$T/run/report.html" ] && [ -f "$T/run/training_loss.png" ] || fail "training wrote no report"
grep -q "wrote .*report.html and .*training_loss.png" "$T/train.log" || fail "training did not say where the report is"
rm "$T/run/report.html" "$T/run/training_loss.png"
"$FTRUN" report "$T/run" > "$T/report.log" 2>&1 || { cat "$T/report.log"; fail "ftrun report"; }
grep -q "wrote $T/run/report.html" "$T/report.log" || { cat "$T/report.log"; fail "ftrun report output"; }
out=$("$FTRUN" report "$T/nothing" 2>&1) && fail "ftrun report on a missing directory succeeded"
[[ "$out" == *"no metrics.jsonl"* ]] || { echo "$out"; fail "ftrun report error message"; }

chrome() {
  timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --user-data-dir="$T/chrome" \
    --no-first-run --hide-scrollbars "$@" "file://$T/run/report.html" 2> "$T/chrome.err" \
    || { cat "$T/chrome.err"; fail "chromium $*"; }
}
chrome --dump-dom > "$T/dom.html"
chrome --screenshot="$T/shot.png" --window-size=1280,2000 > /dev/null
[ -z "${FTRUN_REPORT_SCREENSHOT:-}" ] || cp "$T/shot.png" "$FTRUN_REPORT_SCREENSHOT"

python3 - "$T/run" "$T/dom.html" "$T/shot.png" <<'PY' || fail "the report did not render as expected"
import json, os, re, struct, sys, zlib
from html.parser import HTMLParser

run, dom_file, shot = sys.argv[1:]
html = open(os.path.join(run, "report.html")).read()
for s in ("<script", "src=", "href=", "url(", "@import", "https:"):
    assert s not in html, ("report.html must fetch nothing", s)

def png_size(path):
    b = open(path, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR", path
    return struct.unpack(">II", b[16:24])

assert png_size(os.path.join(run, "training_loss.png")) == (800, 500)

# What the browser rendered: the DOM after loading the file.
class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.paths, self.marks, self.rows, self.chart = {}, {}, 0, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "chart" in a.get("class", ""):
            self.chart = a["id"]
        if tag == "path" and a.get("class") == "series":
            d = a["d"]
            self.paths[a["data-series"]] = (int(a["data-points"]), len(re.findall(r"[ML]", d)), self.chart)
        if tag == "g" and a.get("class") == "checkpoint":
            self.marks.setdefault(self.chart, []).append(int(a["data-step"]))
        if tag == "tr" and a.get("class") == "prediction":
            self.rows += 1
dom = Dom()
dom.feed(open(dom_file).read())
recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
def count(k):
    return sum(1 for r in recs if isinstance(r.get(k), (int, float)))
want = {"loss": count("loss"), "smoothed": count("loss"), "learning_rate": count("learning_rate"),
        "grad_norm": count("grad_norm"), "tokens_per_second": count("tokens_per_second"),
        "eval_loss": count("eval_loss"), "eval_rouge-1": count("eval_rouge-1"),
        "eval_rouge-2": count("eval_rouge-2"), "eval_rouge-l": count("eval_rouge-l"),
        "eval_bleu-4": count("eval_bleu-4")}
assert want["loss"] == 6 and want["eval_loss"] == 3 and want["eval_bleu-4"] == 3, want
for name, n in want.items():
    assert name in dom.paths, (name, sorted(dom.paths))
    declared, drawn, chart = dom.paths[name]
    assert declared == n and drawn == n, (name, declared, drawn, n)
assert len(dom.marks) == 7, dom.marks  # loss, lr, grad norm, tokens/s, eval loss, ROUGE, BLEU
for chart, steps in dom.marks.items():
    assert steps == [20, 40, 60], (chart, steps)
assert dom.rows == 5, dom.rows

# The screenshot: the window's size, and the curves' colours are on it.
w, h = png_size(shot)
assert (w, h) == (1280, 2000), (w, h)
b = open(shot, "rb").read()
pos, idat, hdr = 8, b"", None
while pos < len(b):
    n, kind = struct.unpack(">I4s", b[pos:pos + 8])
    data = b[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        hdr = struct.unpack(">IIBBBBB", data)
    elif kind == b"IDAT":
        idat += data
    pos += 12 + n
depth, ctype, interlace = hdr[2], hdr[3], hdr[6]
assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, colours = bytearray(stride), {}
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        c = prev[i - bpp] if i >= bpp else 0
        up = prev[i]
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + up) & 255
        elif f == 3: line[i] = (line[i] + (a + up) // 2) & 255
        elif f == 4:
            p = a + up - c
            pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        px = bytes(line[x:x + 3])
        colours[px] = colours.get(px, 0) + 1
    prev = line
for name, rgb in (("loss (smoothed)", b"\x1f\x77\xb4"), ("grad norm", b"\xd6\x27\x28")):
    assert colours.get(rgb, 0) >= 200, (name, colours.get(rgb, 0))
print("report: %d series drawn with their point counts, checkpoints %s marked on %d charts, %d predictions; "
      "screenshot %dx%d" % (len(want), dom.marks["chart-loss"], len(dom.marks), dom.rows, w, h))
PY
echo "e2e report: 3 passed"
