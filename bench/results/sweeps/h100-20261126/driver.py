# Device session driver: the benchmarks and the large-recipe sweep, under a time budget.
# Everything lands in /tmp/results, tarred to $OUT/results.tar.gz after each step.
import json, subprocess, sys, time, traceback
from pathlib import Path

def main():
    global OUT, BUDGET, T0, TINY, RES, LOG, summary
    OUT = Path(sys.argv[1]); BUDGET = float(sys.argv[2]); T0 = time.time(); TINY = len(sys.argv) > 3
    RES = Path("/tmp/results"); RES.mkdir(exist_ok=True)
    LOG = open(OUT / "log.txt", "a")
    summary = {}
    fast = step("fast", 60, recipe="fast", seeds=5, baseline="keras_cnn")
    l20 = step("large20", 40, recipe="large", seeds=1, baseline=None)
    w = (l20 or {}).get("wall", 60) if isinstance(l20, dict) else 60
    med = step("medium15", w * 0.6, recipe="medium", seeds=1, baseline=None)
    l30 = step("large30", w * 1.5, recipe="large", seeds=1, baseline=None, epochs=30)
    acc = lambda r: r["mean_accuracy"] if isinstance(r, dict) else 0
    best_e = 30 if acc(l30) > acc(l20) + 0.001 else 20
    step(f"large{best_e}x3", w * (best_e / 20) * 3.2, recipe="large", seeds=3, baseline=None, epochs=best_e)
    step("fast_compile", 90, recipe="fast", seeds=1, baseline=None, compile=True)
    log(json.dumps(summary, indent=1)); pack()

def log(*a):
    msg = " ".join(str(x) for x in a); print(msg, flush=True); LOG.write(msg + "\n"); LOG.flush()
def left(): return BUDGET - (time.time() - T0)
def pack(): subprocess.run(["tar", "czf", str(OUT / "results.tar.gz"), "-C", "/tmp", "results"], check=False)
def step(name, need, **kw):
    if left() < need:
        log(f"SKIP {name}: {left():.0f} s left, needs ~{need:.0f}"); return None
    t = time.time(); log(f"== {name} ({left():.0f} s left)")
    try:
        if TINY: kw.update(train_subset=2100, test_subset=300, epochs=1)
        from cifar_cnn.bench import bench
        rep, path = bench(out_dir=RES / name, log=log, **kw)
        summary[name] = {k: rep.get(k) for k in ("mean_accuracy", "std_accuracy", "train_seconds", "total_seconds", "run_pflops", "train_efficiency", "seeds", "peak_gpu_mib")}
        summary[name]["wall"] = time.time() - t
        if "baseline" in rep: summary[name]["baseline"] = {k: rep["baseline"].get(k) for k in ("mean_accuracy", "train_seconds", "time_to_pass_seconds", "time_to_pass_ratio")}
    except Exception:
        log(traceback.format_exc()); summary[name] = "failed"
    (RES / "summary.json").write_text(json.dumps(summary, indent=1)); pack()
    log(f"   {name}: {summary[name]} ({time.time() - t:.0f} s)")
    return summary[name]

if __name__ == "__main__":
    main()
