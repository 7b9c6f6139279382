"""Data benchmark: prepare, cached start and training memory on corpora of millions of pairs.

Builds an N-pair corpus deterministically from Multi30k in a temporary folder (pair k joins
the training pairs k mod 29000 and (7919 k + k // 29000) mod 29000, as sentence pairs of
twice the usual length: ~270 MB of text per million pairs), points
configs/multi30k_de_en.yaml at it (dev and test stay Multi30k's), and prints for each N:

- ``seq2seq prepare`` on an empty cache: wall time, CPU time (all processes), peak RSS
  (the largest process, as /usr/bin/time reports it);
- ``seq2seq prepare`` again (cached start): wall time, CPU time, peak RSS;
- RssAnon, RssFile and Pss (from /proc/self/status and smaps_rollup) of the training
  process after ``--steps`` training steps of the reference model, alone and on each rank
  of a 2-process torchrun (gloo).

    python scripts/benchmark_data.py --pairs 1000000 5000000 [--steps 200] [--multi30k DIR]

Nothing is written to the repository; the corpus, the cache and the runs go to a
temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "multi30k_de_en.yaml"
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"


def build_corpus(multi30k: Path, pairs: int, folder: Path) -> Path:
    """Write FOLDER/train.de and FOLDER/train.en with ``pairs`` joined Multi30k pairs; returns the prefix."""
    src = gzip.decompress((multi30k / "train.de.gz").read_bytes()).decode("utf-8").splitlines()
    tgt = gzip.decompress((multi30k / "train.en.gz").read_bytes()).decode("utf-8").splitlines()
    size = len(src)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.de", "w", encoding="utf-8") as de, open(folder / "train.en", "w", encoding="utf-8") as en:
        for start in range(0, pairs, 100_000):
            ks = range(start, min(start + 100_000, pairs))
            firsts = [k % size for k in ks]
            seconds = [(7919 * k + k // size) % size for k in ks]
            de.write("".join(f"{src[a]} {src[b]}\n" for a, b in zip(firsts, seconds)))
            en.write("".join(f"{tgt[a]} {tgt[b]}\n" for a, b in zip(firsts, seconds)))
    return folder / "train"


def overrides(prefix: Path, multi30k: Path, cache: Path) -> list[str]:
    return [f"data.train={prefix}", f"data.dev={multi30k / 'val'}", f"data.test={multi30k / 'test_2016_flickr'}",
            f"data.cache_dir={cache}"]


def measured(command: list[str]) -> dict[str, float]:
    """Run ``command`` under a fresh wrapper process: wall s, CPU s of the whole tree, peak RSS (GB) of its largest process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--rusage", "--", *command], check=True, capture_output=True,
                         text=True, env=_env())
    usage = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": time.perf_counter() - start, **usage}


def _rusage_of(command: list[str]) -> None:
    """(Wrapper side) run ``command``; print the CPU time and peak RSS of everything it ran."""
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 2**20}))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def memory_now() -> dict[str, float]:
    """RssAnon and RssFile (/proc/self/status) and Pss (smaps_rollup) of this process, in GB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            fields[line.split(":")[0]] = int(line.split()[1]) / 2**20
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            fields["Pss"] = int(line.split()[1]) / 2**20
    return fields


def _train_worker(out: Path, steps: int, settings: list[str]) -> None:
    """(Training side) train ``steps`` steps; write this rank's memory right after the last step."""
    from seq2seq.config import load_config
    from seq2seq.training import loop

    def measure_and_exit(run: loop._Run, stop: str) -> loop.TrainResult:
        (out / f"rank{run.ctx.rank}.json").write_text(json.dumps(memory_now()))
        os._exit(0)  # skip the final validation and checkpoint: not what is measured

    loop._finish = measure_and_exit  # every rank reaches it after its last step
    cfg = load_config(CONFIG, [*settings, f"train.max_steps={steps}", "train.log_every=50", "train.device=cpu"])
    loop.train(cfg, out / "run", overwrite=True)


def train_memory(settings: list[str], steps: int, folder: Path, processes: int) -> list[dict[str, float]]:
    """Memory of each training process after ``steps`` steps (one process, or a torchrun of ``processes``)."""
    out = folder / f"train{processes}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    worker = [__file__, "--train-worker", str(out), str(steps), "--", *settings]
    command = [sys.executable, *worker] if processes == 1 else \
        ["torchrun", "--standalone", f"--nproc_per_node={processes}", *worker]
    subprocess.run(command, check=True, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def bench(pairs: int, multi30k: Path, steps: int, folder: Path) -> dict[str, object]:
    prefix = build_corpus(multi30k, pairs, folder / f"corpus{pairs}")
    settings = overrides(prefix, multi30k, folder / f"cache{pairs}")
    prepare = [sys.executable, "-m", "seq2seq", "-q", "prepare", str(CONFIG), *(f"--set={s}" for s in settings)]
    row: dict[str, object] = {"pairs": pairs, "text_mb": 2 * prefix.with_suffix(".de").stat().st_size / 1e6}
    for key in ("prepare", "cached"):
        row[key] = measured(prepare)
        print(f"  {pairs:,} pairs, {key}: {json.dumps(row[key])}", flush=True)  # each figure as soon as it is known
    for processes in (1, 2) if steps else ():
        row[f"train{processes}"] = train_memory(settings, steps, folder, processes)
        print(f"  {pairs:,} pairs, {processes} process(es): {json.dumps(row[f'train{processes}'])}", flush=True)
    shutil.rmtree(folder / f"corpus{pairs}", ignore_errors=True)
    shutil.rmtree(folder / f"cache{pairs}", ignore_errors=True)
    return row


def print_row(row: dict) -> None:
    p, c = row["prepare"], row["cached"]
    print(f"{row['pairs']:>9,} pairs ({row['text_mb']:.0f} MB): prepare {p['wall_s']:.0f} s wall, "
          f"{p['cpu_s']:.0f} CPU-s, peak RSS {p['peak_rss_gb']:.2f} GB; cached start {c['wall_s']:.1f} s wall, "
          f"{c['cpu_s']:.1f} CPU-s, peak RSS {c['peak_rss_gb']:.2f} GB")
    for key in ("train1", "train2"):
        for rank, mem in enumerate(row.get(key, [])):
            print(f"    {key[-1]} process(es), rank {rank}: RssAnon {mem['RssAnon']:.2f} GB, "
                  f"RssFile {mem['RssFile']:.2f} GB, Pss {mem['Pss']:.2f} GB")
    print(json.dumps(row), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--rusage"]:
        return _rusage_of(sys.argv[3:])
    if sys.argv[1:2] == ["--train-worker"]:
        return _train_worker(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[5:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--steps", type=int, default=200, help="training steps before the memory reading; 0 = none")
    parser.add_argument("--multi30k", type=Path, default=MULTI30K)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="seq2seq-benchmark-data-"))
    print(f"CPU: {_cpu_name()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        for pairs in args.pairs:
            print_row(bench(pairs, args.multi30k, args.steps, folder))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
