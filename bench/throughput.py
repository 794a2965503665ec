"""Images per second of the CTKD training step and of its parts, measured in one process.

Run: python bench/throughput.py [--precision=float32|mixed_bfloat16] [--jit_compile] [--steps=10]

The parts are measured the same way: the student's training step, the scratch teacher's
training step and the expert's inference, each alone. Their rates predict the CTKD
step's rate as 1 / (1/student + 1/scratch + 1/expert); a ratio >= 1 means the joint step
costs no more than its parts. Also the plain-KD step and the student-only step, and the
process's peak memory. Synthetic data, so the input pipeline is not measured (see
input_pipeline.py).
"""

import argparse
import resource
import time

import ctkd_tf  # before TensorFlow: it picks TensorFlow's CPU kernels (ctkd_tf/__init__.py)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from ctkd_tf.distiller import hinton_kd

from common import machine


def rate(step, batch_size, steps, warmup=2):
    """Images per second of `step()` over `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"]
    )
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--student", default="wrn16_1")
    parser.add_argument("--teacher", default="wrn40_1")
    args = parser.parse_args()
    keras.mixed_precision.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    shape, classes = (32, 32, 3), 10
    x = tf.constant(np.random.default_rng(0).normal(size=(args.batch_size, *shape)).astype("float32"))
    y = tf.constant(np.random.default_rng(1).integers(0, classes, size=args.batch_size))

    def net(name, role):
        return ctkd_tf.models.get(name, classes, shape, weight_decay=5e-4, name=role)

    def train_step(model, **compile_args):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=args.jit_compile, **compile_args
        )
        return lambda: model.train_on_batch(x, y)

    expert = net(args.teacher, "expert")
    infer = tf.function(lambda images: expert(images, training=False), jit_compile=args.jit_compile)
    rates = {
        "student step": rate(
            train_step(ctkd_tf.CTKD(net(args.student, "student"))), args.batch_size, args.steps
        ),
        "scratch teacher step": rate(
            train_step(ctkd_tf.CTKD(net(args.teacher, "scratch"))), args.batch_size, args.steps
        ),
        "expert inference": rate(lambda: infer(x).numpy(), args.batch_size, args.steps),
    }
    ctkd = ctkd_tf.CTKD(net(args.student, "student"), net(args.teacher, "scratch"), expert)
    rates["CTKD step"] = rate(train_step(ctkd), args.batch_size, args.steps)
    kd = hinton_kd(net(args.student, "student"), expert)
    rates["KD step"] = rate(
        train_step(kd, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        args.batch_size,
        args.steps,
    )
    predicted = 1.0 / sum(
        1.0 / rates[part] for part in ("student step", "scratch teacher step", "expert inference")
    )

    print(
        f"{args.student} student, {args.teacher} scratch teacher and expert, batch {args.batch_size}, "
        f"{args.precision}{', XLA' if args.jit_compile else ''}\n  on {machine()}"
    )
    for name, value in rates.items():
        print(f"  {name:22s} {value:8.1f} images/s")
    print(f"  {'parts predict':22s} {predicted:8.1f} images/s")
    print(f"  CTKD / predicted ratio {rates['CTKD step'] / predicted:8.2f}")
    print(f"  peak memory            {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MiB")


if __name__ == "__main__":
    main()
