import os
from pathlib import Path

# Tests use the project's data directory unless one is set (make sets METAGUARD_DATA).
os.environ.setdefault('METAGUARD_DATA', str(Path(__file__).resolve().parent.parent/'data'))
