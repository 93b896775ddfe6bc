"""What the benchmarks record about the machine: the CPU's name and the package versions.

Standard library only, so the GPU check (which may run where nothing but torch, timm and peft
is installed) can use it too.
"""
import platform
from typing import Dict, Iterable


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(packages: Iterable[str]) -> Dict[str, str]:
    """``{package: __version__}``, 'not installed' for a package that does not import."""
    versions = {}
    for package in packages:
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = 'not installed'
    return versions
