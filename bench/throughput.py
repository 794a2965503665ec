"""Images per second of the CTKD training step and of its parts, against this CPU's limit.

Run: python bench/throughput.py [--processes=5] [--precision=float32|mixed_bfloat16]
     [--jit_compile] [--keras_batchnorm] [--deterministic] [--steps=16] [--side_by_side]
     [--student=wrn16_1 --teacher=wrn40_1 [--expert=...] --image_size=32]

Networks are zoo names or Keras Applications names (built with weights=None, logits out,
attention pairs "auto"), for example
    python bench/throughput.py --student=MobileNetV3Small --teacher=MobileNetV3Large \
        --expert=EfficientNetB0 --image_size=96 --batch_size=32 --processes=1

First the machine's measured fp32 matrix-multiply peak (GFLOP/s), and the step's
physical limit: that peak over the step's arithmetic (forward and backward of the
student and the scratch teacher, forward of the expert, counted from the networks'
convolutions and dense layers). Then the CTKD step in `--processes` fresh processes
(the speed of one process is not the speed of the next: report all), each with the
matmul peak measured in that process just before (the machine's own noise) and its share
of the limit that peak gives. Then, in this process, the parts: the student's training step, the scratch
teacher's training step and the expert's inference; their rates predict the CTKD
step's as 1 / (1/student + 1/scratch + 1/expert) (a ratio >= 1 means the joint step
costs no more than its parts); the plain-KD step; the peak memory. Synthetic data, so
the input pipeline is not measured (see input_pipeline.py). `--keras_batchnorm` trains
the networks with Keras's own batch norm (the figures before the fused one: the models
get `fused_batchnorm=False`). `--side_by_side` then runs the same fresh processes all
at once, the cores split between them, and prints their sum against one process at a
time: what running independent trainings (seeds, trials, a study's runs) together gains.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import ctkd_tf  # before TensorFlow: it picks TensorFlow's CPU kernels (ctkd_tf/__init__.py)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from ctkd_tf.distiller import hinton_kd

from common import machine, step_flops


def rate(step, batch_size, steps, warmup=2):
    """Images per second of `step()` over `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


def matmul_peak(size=2048, repeats=20, rounds=5):
    """The best of `rounds` fp32 matrix-multiply rates, in GFLOP/s (TensorFlow's kernel).

    It runs on the process's intra-op threads: with fewer than the cores, it is not the
    machine's peak.
    """
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    product = tf.function(tf.matmul)
    product(a, b).numpy()
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            result = product(a, b)
        result.numpy()
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


class Bench:
    """The networks and data of the measurements."""

    def __init__(self, args):
        self.args = args
        keras.mixed_precision.set_dtype_policy(args.precision)
        keras.utils.set_random_seed(0)
        self.shape, self.classes = (args.image_size, args.image_size, 3), 10
        rng = np.random.default_rng(0)
        self.x = tf.constant(rng.normal(size=(args.batch_size, *self.shape)).astype("float32"))
        self.y = tf.constant(rng.integers(0, self.classes, size=args.batch_size))

    def net(self, name, role):
        if name not in ctkd_tf.models.names():  # a Keras Applications network
            return getattr(keras.applications, name)(
                input_shape=self.shape,
                weights=None,
                classes=self.classes,
                classifier_activation=None,
                name=role,
            )
        return ctkd_tf.models.get(
            name,
            self.classes,
            self.shape,
            weight_decay=5e-4,
            fused_batchnorm=not self.args.keras_batchnorm,
            name=role,
        )

    def ctkd(self, student=None, scratch_teacher=None, expert=None):
        """A CTKD model of the given networks; given none, of the measured step's three."""
        args = self.args
        if student is None:
            student = self.net(args.student, "student")
            scratch_teacher = self.net(args.teacher, "scratch")
            expert = self.net(args.expert or args.teacher, "expert")
        return ctkd_tf.CTKD(student, scratch_teacher, expert, fused_batchnorm=not args.keras_batchnorm)

    def train_step(self, model, **compile_args):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            jit_compile=self.args.jit_compile,
            **compile_args,
        )
        return lambda: model.train_on_batch(self.x, self.y)

    def rate(self, step):
        return rate(step, self.args.batch_size, self.args.steps)


def side_by_side_threads(processes):
    """Intra-op threads of each of `processes` processes sharing the cores."""
    return max(1, os.cpu_count() // processes)


def ctkd_in_fresh_processes(args, side_by_side=False):
    """[(CTKD step images/s, matmul peak GFLOP/s just before it)], each pair from a new process.

    One process after the other, with the threads TensorFlow picks; or, `side_by_side`,
    all at once, the cores split between them (one op at a time each).
    """
    command = [sys.executable, __file__, "--ctkd_only", *sys.argv[1:]]
    env = None
    if side_by_side:
        threads = str(side_by_side_threads(args.processes))
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"}

    def start():
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def result(process):
        out, err = process.communicate()
        if process.returncode:
            raise RuntimeError(f"a timing process failed:\n{err}")
        measured = json.loads(out.strip().splitlines()[-1])
        return measured["ctkd"], measured["peak"]

    if side_by_side:
        return [result(process) for process in [start() for _ in range(args.processes)]]
    return [result(start()) for _ in range(args.processes)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"]
    )
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--keras_batchnorm", action="store_true", help="Keras's unfused batch norm")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--processes", type=int, default=5, help="fresh processes timing the CTKD step")
    parser.add_argument("--student", default="wrn16_1")
    parser.add_argument("--teacher", default="wrn40_1", help="the scratch teacher (and the expert)")
    parser.add_argument("--expert", default=None, help="the expert, if not --teacher")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--no_parts", action="store_true", help="only the CTKD step in fresh processes")
    parser.add_argument(
        "--side_by_side",
        action="store_true",
        help="then the same processes all at once, the cores split between them (use --steps=100)",
    )
    parser.add_argument("--deterministic", action="store_true", help="what --deterministic of the apps runs")
    parser.add_argument("--ctkd_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deterministic:
        ctkd_tf.kernels.sum_gradients_in_a_fixed_order()
        tf.config.experimental.enable_op_determinism()
    bench = Bench(args)
    if args.ctkd_only:  # one of the fresh processes: the machine's speed now, then the step's
        step = bench.train_step(bench.ctkd())
        peak = matmul_peak(rounds=3)
        print(json.dumps({"ctkd": bench.rate(step), "peak": peak}))
        return

    peak = matmul_peak()
    fresh = ctkd_in_fresh_processes(args)
    ctkd = bench.ctkd()
    flops = step_flops(ctkd.student, ctkd.scratch_teacher, ctkd.expert_teacher)
    limit = peak * 1e9 / flops
    batchnorm = "Keras batch norm" if args.keras_batchnorm else "fused batch norm"
    print(
        f"{args.student} student, {args.teacher} scratch teacher, {args.expert or args.teacher} expert, "
        f"{args.image_size} px, batch {args.batch_size}, "
        f"{args.precision}{', XLA' if args.jit_compile else ''}, {batchnorm}"
        f"{', deterministic' if args.deterministic else ''}\n  on {machine()}\n"
        f"  threads: intra-op {os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}, "
        f"inter-op {os.environ.get('TF_NUM_INTEROP_THREADS', 'default')}"
    )
    print(f"  matmul peak (fp32)     {peak:8.1f} GFLOP/s")
    print(f"  CTKD step arithmetic   {flops / 1e9:8.3f} GFLOP per image")
    print(f"  limit (peak / work)    {limit:8.1f} images/s")
    rates, peaks = np.array(fresh).T
    shares = 100 * rates * flops / (peaks * 1e9)  # of each process's own limit
    print(f"  CTKD step, {len(fresh)} fresh processes (images/s, share of the limit of the matmul peak")
    print("  measured in the same process just before):")
    print(
        "    " + ", ".join(f"{r:.1f} ({s:.0f} % of {p:.0f} GFLOP/s)" for r, s, p in zip(rates, shares, peaks))
    )
    print(
        f"    spread (max / min): step {rates.max() / rates.min():.2f}, matmul peak "
        f"{peaks.max() / peaks.min():.2f}, share {shares.max() / shares.min():.2f}"
    )
    if args.side_by_side:
        together = np.array(ctkd_in_fresh_processes(args, side_by_side=True))[:, 0]
        print(
            f"  side by side, {args.processes} processes of "
            f"{side_by_side_threads(args.processes)} thread(s) each: "
            + ", ".join(f"{r:.1f}" for r in together)
            + f" images/s; together {together.sum():.1f}, {together.sum() / rates.mean():.2f}x one "
            "process at a time (the mean above)"
        )
    if args.no_parts:
        return
    expert = ctkd.expert_teacher
    infer = tf.function(lambda images: expert(images, training=False), jit_compile=args.jit_compile)
    rates = {
        "student step": bench.rate(bench.train_step(bench.ctkd(bench.net(args.student, "student")))),
        "scratch teacher step": bench.rate(bench.train_step(bench.ctkd(bench.net(args.teacher, "scratch")))),
        "expert inference": bench.rate(lambda: infer(bench.x).numpy()),
        "CTKD step": bench.rate(bench.train_step(ctkd)),
        "KD step": bench.rate(
            bench.train_step(
                hinton_kd(
                    bench.net(args.student, "student"), expert, fused_batchnorm=not args.keras_batchnorm
                ),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        ),
    }
    predicted = 1.0 / sum(
        1.0 / rates[part] for part in ("student step", "scratch teacher step", "expert inference")
    )
    for name, value in rates.items():
        print(f"  {name:22s} {value:8.1f} images/s")
    print(f"  {'parts predict':22s} {predicted:8.1f} images/s")
    print(f"  CTKD / predicted ratio {rates['CTKD step'] / predicted:8.2f}")
    print(f"  peak memory            {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MiB")


if __name__ == "__main__":
    main()
