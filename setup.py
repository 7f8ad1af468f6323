"""Install ocp_dali; the top-level ``kernels/`` folder installs as ``ocp_dali.kernels``."""
from setuptools import setup

setup(
    name="ocp_dali",
    version="0.1.0",
    description="Occlusion Copy & Paste as GPU operators (CuPy kernels in an NVIDIA DALI pipeline) for mmdet and PyTorch",
    python_requires=">=3.10",
    packages=["ocp_dali", "ocp_dali.data", "ocp_dali.mmdet", "ocp_dali.kernels"],
    package_dir={"ocp_dali.kernels": "kernels"},
    package_data={"ocp_dali.kernels": ["*.cu", "*.cuh", "*.h", "*.cpp"]},
    install_requires=["numpy>=1.24", "pycocotools>=2.0.7", "Pillow>=10"],
    extras_require={
        "gpu": ["cupy-cuda13x", "nvidia-dali-cuda130"],
        "mmdet": ["mmengine==0.10.7", "mmcv==2.1.0", "mmdet==3.3.0"],
        "test": ["pytest", "hypothesis"],
    },
)
