"""Named training recipes: `fastfcnn train --preset NAME` fills in these options.

Each preset maps TrainConfig field names to values (config.resolve layers them: defaults, then the
preset, then a config file, then options given explicitly).
"""
from .config import flag, show

PRESETS = {
    # The seed architecture 3072-64-64-10, aiming at >= 55 % test accuracy within 2 minutes on
    # 2 cores: it underfits rather than overfits once flips and 2-pixel crops are on, so it
    # gets a long cosine schedule (measured: 57.9 % at 60 epochs, 59.0 % at 100; JPEG-75 CIFAR-10).
    "seed": {
        "hidden": [64, 64], "epochs": 80, "batch_size": 128, "lr": 0.05, "lr_schedule": "cosine",
        "warmup_epochs": 2.0, "nesterov": True, "weight_decay": 5e-4, "label_smoothing": 0.1,
        "crop_pad": 2, "crop_mode": "reflect", "flip": True,
    },
    # A wide net tuned for accuracy per CPU-minute, aiming at >= 70 % within 60 minutes on 2 cores
    # (measured on JPEG-75 CIFAR-10, 240 epochs: 69.7 % test, 70.35 % with flip TTA, in 46.2 min at
    # 11.1 s an epoch; 70.1 % in 57.3 min with the kernels of commit c1aa5fc; with earlier backward
    # kernels, 17.0 s an epoch, 64.6 % after 100 epochs and 68.5 % after 180).
    # In a 6-epoch 1024-1024 pilot ZCA whitening (eps 0.1) was both slower per epoch (x1.8) and
    # behind (44.7 % vs 50.8 % validation), so it is left off.
    "wide": {
        "hidden": [2048, 2048], "epochs": 240, "batch_size": 256, "lr": 0.02, "lr_schedule": "onecycle",
        "warmup_epochs": 3.0, "nesterov": True, "weight_decay": 5e-4, "label_smoothing": 0.1,
        "dropout": 0.2, "crop_pad": 4, "crop_mode": "reflect", "flip": True,
    },
    # The wide recipe for the hour on a CPU with AVX512_BF16: bf16 products make an epoch 1.8x
    # faster, and the time goes to more epochs over all 50,000 training images. The recipe was
    # chosen on the wide preset's validation split (430 epochs on 45,000 images: 70.9 % validation,
    # 71.8 % test); holding nothing out then buys 11 % more data for 5 % fewer epochs.
    "wide-bf16": {
        "hidden": [2048, 2048], "epochs": 410, "batch_size": 256, "lr": 0.02, "lr_schedule": "onecycle",
        "warmup_epochs": 3.0, "nesterov": True, "weight_decay": 5e-4, "label_smoothing": 0.1,
        "dropout": 0.2, "crop_pad": 4, "crop_mode": "reflect", "flip": True,
        "precision": "bf16", "val_size": 0,
    },
}


def describe() -> str:
    """One line per preset: its name and the options it expands to, as command-line flags."""
    lines = []
    for name, opts in PRESETS.items():
        flags = []
        for key, value in opts.items():
            if isinstance(value, bool):
                flags.append(flag(key) if value else "--no-" + key.replace("_", "-"))
            else:
                flags.append(f"{flag(key)} {show(value).strip(chr(39))}")
        lines.append(f"{name}: {' '.join(flags)}")
    return "\n".join(lines)
