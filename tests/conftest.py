import json
import os
from pathlib import Path

# Tests use the project's data directory unless one is set (make sets METAGUARD_DATA).
os.environ.setdefault('METAGUARD_DATA', str(Path(__file__).resolve().parent.parent/'data'))
os.environ.setdefault('METAGUARD_COMPILE', '0')  # eager unless a test asks for compile=True (see the Makefile's test)


def interrupted_on_call(n, real):
    "`real`, except that its n-th call raises KeyboardInterrupt (a Ctrl-C at that moment)."
    calls = {'n': 0}

    def flaky(*a, **k):
        calls['n'] += 1
        if calls['n'] == n:
            raise KeyboardInterrupt
        return real(*a, **k)
    return flaky


def markdown_of(nb):
    "A notebook's markdown cells, joined."
    return '\n\n'.join(''.join(c['source']) for c in json.loads(Path(nb).read_text())['cells'] if c['cell_type'] == 'markdown')
