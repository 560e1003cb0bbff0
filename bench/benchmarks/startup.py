"""Cold start: a fresh interpreter imports fastfcnn and JIT-compiles every kernel of a step."""
from . import require_suite


def setup():
    require_suite()


def timeraw_cold_import_and_jit():
    """Import plus compilation of all kernels a training step calls (with an empty
    NUMBA_CACHE_DIR, so nothing comes from numba's on-disk cache), plus one tiny seed-net step."""
    setup = """
import atexit, os, shutil, tempfile
cache = tempfile.mkdtemp(prefix="fastfcnn-asv-jit-")
atexit.register(shutil.rmtree, cache, True)
os.environ["NUMBA_CACHE_DIR"] = cache
"""
    code = """
from fastfcnn.bench.common import make_trainer, synthetic_cifar
trainer = make_trainer("seed", "numba", synthetic_cifar(256, 10))
trainer.step(trainer.train_idx[:128], 0.01)
"""
    return code, setup


timeraw_cold_import_and_jit.repeat = (4, 5, 60.0)  # 8+ samples: see training.Epoch
timeraw_cold_import_and_jit.timeout = 300
