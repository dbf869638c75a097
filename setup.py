"""Build pygan: setuptools drives CMake (the pybind11 cmake_example pattern) to build pygan._C.

Environment variables read at build time (see README, "Build options"):
  PYGAN_CPU_ONLY=1      build without CUDA, even when nvcc is on PATH
  PYGAN_CUDA_ARCH=...   CUDA architectures, CMake syntax (default "80;90": sm_80 and sm_90)
  PYGAN_REQUIRE_CUDA=1  fail instead of building CPU-only when no CUDA compiler is found
  PYGAN_BUILD_JOBS=N    parallel build jobs (default: number of CPUs)
  PYGAN_NO_EMULATION=1  do not build pygan._emu (the host-emulation test module)
  PYGAN_NO_CPU_GEMM=1   do not build pygan._cpu (the CPU backend's GEMM; it then uses OpenBLAS)
  CMAKE_ARGS="..."      extra arguments for the CMake configure step
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "on", "true", "yes")


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    """One CMake build tree for every extension: configured once, then each extension builds
    its own target (pygan._C -> _C, pygan._cpu -> _cpu, pygan._emu -> _emu) into its output
    directory."""

    _configured = None

    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11  # a build requirement (pyproject.toml), so import it only here

        # Must be in this form due to a bug in .resolve() only fixed in Python 3.10+
        ext_fullpath = Path.cwd() / self.get_ext_fullpath(ext.name)
        extdir = ext_fullpath.parent.resolve()

        debug = int(os.environ.get("DEBUG", 0)) if self.debug is None else self.debug
        cfg = "Debug" if debug else "Release"

        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DPYGAN_CPU_ONLY={'ON' if _env_flag('PYGAN_CPU_ONLY') else 'OFF'}",
            f"-DPYGAN_REQUIRE_CUDA={'ON' if _env_flag('PYGAN_REQUIRE_CUDA') else 'OFF'}",
            f"-DPYGAN_BUILD_EMULATION={'OFF' if _env_flag('PYGAN_NO_EMULATION') else 'ON'}",
            f"-DPYGAN_BUILD_CPU={'OFF' if _env_flag('PYGAN_NO_CPU_GEMM') else 'ON'}",
        ]
        arch = os.environ.get("PYGAN_CUDA_ARCH", "").strip()
        # -U drops a value cached by an earlier build so CMakeLists.txt's default applies again.
        cmake_args += [f"-DPYGAN_CUDA_ARCH={arch}"] if arch else ["-UPYGAN_CUDA_ARCH"]
        if "CMAKE_ARGS" in os.environ:
            cmake_args += [item for item in os.environ["CMAKE_ARGS"].split(" ") if item]

        target = ext.name.rsplit(".", 1)[-1]
        build_args = ["--config", cfg, "--target", target]
        jobs = os.environ.get("PYGAN_BUILD_JOBS", "").strip()
        if jobs:
            build_args += [f"-j{jobs}"]
        elif "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build_args += [f"-j{self.parallel or os.cpu_count() or 2}"]

        build_temp = Path(self.build_temp) / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)

        if self._configured != (build_temp, cmake_args):
            subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
            self._configured = (build_temp, cmake_args)
        subprocess.run(["cmake", "--build", ".", *build_args], cwd=build_temp, check=True)


setup(
    name="pygan",
    version="0.1.0",
    description="A small framework-free GAN engine: numpy reference ops and hand-written CUDA kernels",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    if Path(__file__).with_name("README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pygan", "pygan.*"]),
    package_data={"pygan": ["assets/*.safetensors", "assets/*.json"]},
    ext_modules=[CMakeExtension("pygan._C")]
    + ([] if _env_flag("PYGAN_NO_CPU_GEMM") else [CMakeExtension("pygan._cpu")])
    + ([] if _env_flag("PYGAN_NO_EMULATION") else [CMakeExtension("pygan._emu")]),
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        "numpy",
        "tqdm",
        "pillow",
        "matplotlib",
        "safetensors",
        "scipy",
        "numba",  # the fast CPU backend (pygan/ops/cpu.py); without it the CPU runs on the reference
    ],
    extras_require={
        "cuda": ["cupy-cuda13x"],
        # pybind11: tests/test_build.py builds the extension again (CPU-only, in a temporary folder)
        "dev": ["pytest", "hypothesis", "pybind11>=2.12"],
    },
    entry_points={"console_scripts": ["pygan = pygan.cli:main"]},
    zip_safe=False,
)
