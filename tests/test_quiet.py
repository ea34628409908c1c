"A machine without a GPU hears nothing from PyTorch's CUDA probes: not on import, not when compiling, not when profiling."
import subprocess
import sys

CODE = '''
import torch
import metaguard_nb.guards  # imports the data module, which quiets the probes
from torch.profiler import profile
import torch.utils.cpp_extension  # what Inductor loads when it compiles
f = torch.compile(lambda x: torch.sigmoid(x) * 2)
f(torch.ones(8))
with profile() as p: torch.ones(3) + 1
print('done')
'''


def test_no_cuda_probe_lines():
    r = subprocess.run([sys.executable, '-c', CODE], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == 'done', r.stderr[-2000:]
    for probe in ('No CUDA runtime is found', 'gpuGetDeviceCount', 'profiler_start', 'USDT'):
        assert probe not in r.stderr, r.stderr[-2000:]
