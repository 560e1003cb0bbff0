"""Print this CPU's LLVM feature string with AVX-512 (and AMX) turned off, for NUMBA_CPU_FEATURES:
it makes Numba compile the kernels as for an AVX2-only CPU (most laptops), so both register tiles
can be measured on one machine:

    NUMBA_CPU_FEATURES="$(python -m fastfcnn.bench.avx2_features)" fastfcnn bench --nets wide
"""
from llvmlite.binding import get_host_cpu_features

AVX512_FAMILY = ("avx512", "amx", "avx10", "evex512")


def avx2_features() -> str:
    features = get_host_cpu_features()
    for name in list(features.keys()):
        if name.startswith(AVX512_FAMILY):
            features[name] = False
    return features.flatten()


if __name__ == "__main__":
    print(avx2_features())
