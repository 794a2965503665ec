"""Where the training step's time goes: a TensorFlow profile and the convolution kernels.

Run: python bench/profile_step.py [--network=wrn40_1 | --ctkd] [--steps=5] [--logdir=/tmp/ctkd_profile]

1. Profiles `--steps` training steps of one network (batch 128, SGD, weight decay, no
   XLA), or with `--ctkd` of the CTKD step (WRN-16-1 student, `--network` as scratch
   teacher and expert), with the TensorFlow profiler and prints the self time per op
   type. Ops that run at the same time each count their own time: with
   `TF_NUM_INTEROP_THREADS=1` they run one at a time and the sum is the step's time. The trace
   stays in --logdir for TensorBoard's Profile tab (`tensorboard --logdir=...`).
2. Times the three kernels of one 3x3 convolution of the first group (128x32x32x16,
   16 -> 16 channels): forward, gradient with respect to the input, gradient with
   respect to the kernel, each as TensorFlow runs it and under XLA; then the gradients
   written as other kernels that compute them: the input gradient as the forward
   convolution it equals (flipped, transposed kernel), the kernel gradient as a forward
   convolution too (batch and channels swapped, the output gradient as the kernel) and
   as one matrix product of the input's 3x3 patches (im2col) with the output gradient.
"""

import argparse
import collections
import glob
import json
import time

import ctkd_tf  # before TensorFlow: it picks TensorFlow's CPU kernels (ctkd_tf/__init__.py)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from common import machine


def profile_op_types(network, batch_size, steps, logdir, ctkd=False):
    """Self time (ms per step) per op type of `network`'s (or the CTKD step's) training step."""
    from xprof.convert import raw_to_tool_data

    shape, classes = (32, 32, 3), 10

    def net(name, role):
        return ctkd_tf.models.get(name, classes, shape, weight_decay=5e-4, name=role)

    if ctkd:
        model = ctkd_tf.CTKD(net("wrn16_1", "student"), net(network, "scratch"), net(network, "expert"))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    else:
        model = net(network, network)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *shape)).astype("float32")
    y = rng.integers(0, classes, size=batch_size)
    for _ in range(3):
        model.train_on_batch(x, y)
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
    spaces = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1:]
    table = raw_to_tool_data.xspace_to_tool_data(spaces, "framework_op_stats", {})[0]
    rows = json.loads(table)[0]["rows"]
    self_time = collections.Counter()
    for row in rows:
        values = [cell["v"] for cell in row["c"]]
        if values[2] != "IDLE":
            self_time[values[2]] += values[7] / 1e3 / steps  # column 7: total self time (us)
    return seconds, self_time


def conv_kernel_functions(batch_size):
    """One group-1 convolution's kernels (and the rewrites of its gradients), by name."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch_size, 32, 32, 16)).astype("float32"))
    dy = tf.constant(rng.normal(size=(batch_size, 32, 32, 16)).astype("float32"))
    kernel = tf.constant(rng.normal(size=(3, 3, 16, 16)).astype("float32"))
    flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
    ones = [1, 1, 1, 1]

    def padded():
        return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])

    def kernel_gradient_as_conv():
        # dK[i, j, c, d] = sum over n, h, w of x[n, h + i, w + j, c] * dy[n, h, w, d]: a
        # VALID convolution of x with channels as batch and batch as channels by dy.
        swapped = tf.transpose(padded(), [3, 1, 2, 0])
        return tf.transpose(tf.nn.conv2d(swapped, tf.transpose(dy, [1, 2, 0, 3]), 1, "VALID"), [1, 2, 0, 3])

    def kernel_gradient_as_matmul():
        patches = tf.concat([padded()[:, i : i + 32, j : j + 32] for i in range(3) for j in range(3)], -1)
        product = tf.matmul(tf.reshape(patches, [-1, 9 * 16]), tf.reshape(dy, [-1, 16]), transpose_a=True)
        return tf.reshape(product, kernel.shape)

    return {
        "forward": lambda: tf.nn.conv2d(x, kernel, 1, "SAME"),
        "input gradient": lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=kernel, out_backprop=dy, strides=ones, padding="SAME"
        ),
        "kernel gradient": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=kernel.shape, out_backprop=dy, strides=ones, padding="SAME"
        ),
        "input gradient as forward conv": lambda: tf.nn.conv2d(dy, flipped, 1, "SAME"),
        "kernel gradient as forward conv": kernel_gradient_as_conv,
        "kernel gradient as im2col matmul": kernel_gradient_as_matmul,
    }


def conv_kernels(batch_size, jit_compile, repeats=20):
    """Milliseconds per call of one group-1 convolution's kernels."""
    times = {}
    for name, kernel_fn in conv_kernel_functions(batch_size).items():
        function = tf.function(kernel_fn, jit_compile=jit_compile)
        function().numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            result = function()
        result.numpy()
        times[name] = (time.perf_counter() - start) / repeats * 1e3
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="wrn40_1", choices=ctkd_tf.models.names())
    parser.add_argument("--ctkd", action="store_true", help="the CTKD step (wrn16_1 student)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--logdir", default="/tmp/ctkd_profile")
    args = parser.parse_args()

    seconds, self_time = profile_op_types(args.network, args.batch_size, args.steps, args.logdir, args.ctkd)
    total = sum(self_time.values())
    step = f"CTKD (wrn16_1 student, {args.network} teachers)" if args.ctkd else args.network
    print(
        f"{step} training step, batch {args.batch_size}, float32, no XLA: "
        f"{args.batch_size / seconds:.1f} images/s while profiled; trace in {args.logdir}\n  on {machine()}"
    )
    print(f"  wall time {1e3 * seconds:.0f} ms per step, self times summed {total:.0f} ms")
    print(f"  {'op type':28s} {'ms/step':>9s} {'share':>6s}  (self time summed over threads)")
    for op_type, ms in self_time.most_common(args.top):
        print(f"  {op_type:28s} {ms:9.1f} {100 * ms / total:5.1f}%")

    print(f"\nOne group-1 3x3 convolution ({args.batch_size}x32x32x16, 16 -> 16), ms per call:")
    plain, xla = conv_kernels(args.batch_size, False), conv_kernels(args.batch_size, True)
    print(f"  {'kernel':32s} {'TensorFlow':>10s} {'XLA':>8s}")
    for name in plain:
        print(f"  {name:32s} {plain[name]:10.2f} {xla[name]:8.2f}")
    print(
        f"  {'forward + both gradients':32s} {sum(list(plain.values())[:3]):10.2f} "
        f"{sum(list(xla.values())[:3]):8.2f}"
    )


if __name__ == "__main__":
    main()
