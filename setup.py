"""Packaging for mmflora: FLoRA adapters for OpenMMLab dense-vision models."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    """Read ``__version__`` from mmflora/version.py without importing the package."""
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mmflora', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmflora',
    version=read_version(),
    description='FLoRA (Tucker low-rank adaptation) for MMDetection, MMSegmentation and MMRotate',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools', 'benchmarks')),
    python_requires='>=3.10',
    install_requires=[
        'torch>=2.1',
        'torchvision',
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        # mmrotate 1.x is published on PyPI as mmrotate-dev; it imports as `mmrotate`.
        'mmrotate-dev==1.0.1',
        'timm>=1.0,<1.1',
        'safetensors>=0.4',
        # mmsegmentation imports these without declaring them.
        'ftfy',
        'regex',
        # mmdet's CocoMetric and mmrotate's data pipeline.
        'pycocotools',
        'shapely',
        'matplotlib',
    ],
    extras_require={
        'tests': ['pytest>=7', 'pytest-timeout'],
        'bench': ['peft>=0.10', 'scipy'],  # scipy: the transfer benchmark's paired t-test
    },
    zip_safe=False,
)
