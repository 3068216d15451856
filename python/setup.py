"""Builds ntk._core with CMake (python/CMakeLists.txt over the headers in ../include) and installs
the ntk package.  Offline on Debian 12:
    /usr/bin/python3 -m pip install --user --break-system-packages --no-build-isolation --no-index ./python
(see README: Python).  CMAKE_BUILD_PARALLEL_LEVEL sets the compile jobs (default 2)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
VERSION_HEADER = HERE.parent / "include" / "ntk" / "version.hpp"


def version():
    text = VERSION_HEADER.read_text()
    parts = [re.search(rf"#define NTK_VERSION_{p} (\d+)", text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build = Path(self.build_temp).resolve() / "cmake"
        build.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", "-S", str(HERE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        f"-DPython_EXECUTABLE={sys.executable}"], check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(["cmake", "--build", str(build), "--target", "ntk_python_core", "-j", jobs], check=True)
        built = next((build / "ntk").glob("_core*" + Path(target).suffix))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(
    name="ntk",
    version=version(),
    description="Neural Tangent Kernels (NNGP/NTK, finite networks, linearized dynamics, deep limit) from NumPy",
    license="See LICENSE in the ntk repository",
    packages=["ntk"],
    ext_modules=[CMakeExtension("ntk._core")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=["numpy"],
    extras_require={"sklearn": ["scikit-learn", "scipy"]},
    zip_safe=False,
)
