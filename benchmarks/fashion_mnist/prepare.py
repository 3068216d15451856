#!/usr/bin/python3
"""Fashion-MNIST (Debian's dataset-fashion-mnist, IDX .gz files) as .npy files for `ntk predict`.

Usage: prepare.py OUT_DIR [N_TRAIN ...]
Writes OUT_DIR/train_x_N.npy (the first N_TRAIN training images, pixels / 255 in [0, 1], float32,
one image per row), OUT_DIR/train_labels_N.npy (class ids 0..9, one column), and the full 10,000-image
test set as test_x.npy / test_labels.npy.  Files are named train_x_N.npy / train_labels_N.npy.
"""
import gzip
import os
import sys

import numpy as np

SOURCE = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def read_idx(name):
    with gzip.open(os.path.join(SOURCE, name), "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    return array.reshape(shape)


def main():
    out = sys.argv[1]
    sizes = [int(s) for s in sys.argv[2:]] or [60000]
    os.makedirs(out, exist_ok=True)
    sizes = sorted(set(sizes))
    train_x = read_idx("train-images-idx3-ubyte.gz").reshape(60000, 784).astype(np.float32) / 255
    train_y = read_idx("train-labels-idx1-ubyte.gz").astype(np.float64).reshape(-1, 1)
    test_x = read_idx("t10k-images-idx3-ubyte.gz").reshape(10000, 784).astype(np.float32) / 255
    test_y = read_idx("t10k-labels-idx1-ubyte.gz").astype(np.float64).reshape(-1, 1)
    for n in sizes:
        suffix = "_%d" % n
        np.save(os.path.join(out, "train_x%s.npy" % suffix), train_x[:n])
        np.save(os.path.join(out, "train_labels%s.npy" % suffix), train_y[:n])
    np.save(os.path.join(out, "test_x.npy"), test_x)
    np.save(os.path.join(out, "test_labels.npy"), test_y)


if __name__ == "__main__":
    main()
