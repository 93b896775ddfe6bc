"""``python -m mmflora.datasets``: images/s of the procedural generator per task."""
from .procedural import measure_speed

measure_speed()
