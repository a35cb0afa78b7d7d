"""Run as a script: train an exported model on LiteRT in a process where TensorFlow is blocked.

``python device_train.py MODEL_DIR DATA.npz EPOCHS LR`` prints one JSON line. Importing
tensorflow or keras raises ImportError here, as on a device.
"""

from __future__ import annotations

import json
import sys

HEAVY = {"tensorflow", "keras", "tf_keras", "jax", "torch"}


class _Blocker:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is not installed on this device")


def main(argv: list[str]) -> int:
    sys.meta_path.insert(0, _Blocker())
    import numpy as np

    from fedrt.model_export import LiteRTModel

    directory, data_path, epochs, lr = argv[0], argv[1], int(argv[2]), float(argv[3])
    data = np.load(data_path)
    x_train, y_train, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    model = LiteRTModel.open(directory)
    batch = model.batch_size
    rng = np.random.default_rng(0)
    start = model.get_weights()
    start_eval = model.evaluate(x_test[:batch], y_test[:batch])
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for lo in range(0, len(order) - batch + 1, batch):
            idx = order[lo : lo + batch]
            losses.append(model.train(x_train[idx], y_train[idx], lr))
    accuracy = float(np.mean(np.argmax(model.infer(x_test), axis=1) == y_test))
    trained = model.get_weights()
    model.set_weights(start)
    restored_eval = model.evaluate(x_test[:batch], y_test[:batch])
    model.set_weights(trained)
    after_eval = model.evaluate(x_test[:batch], y_test[:batch])
    print(
        json.dumps(
            {
                "accuracy": accuracy,
                "first_loss": losses[0],
                "last_loss": float(np.mean(losses[-10:])),
                "steps": len(losses),
                "start_eval": start_eval,
                "restored_eval": restored_eval,
                "after_eval": after_eval,
                "heavy_loaded": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
