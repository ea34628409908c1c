"JupyterLab's server leaves the notebooks alone when one is opened and saved unchanged, and keeps the text copy paired on an edit."
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NB = 'nbs/03_guards.ipynb'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "A Jupyter server, as `make lab` starts it, on a copy of the repository's notebooks and pairing config."
    repo = tmp_path_factory.mktemp('repo')
    shutil.copytree(ROOT / 'nbs', repo / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    shutil.copy(ROOT / 'jupytext.toml', repo)
    port, token = _free_port(), 'metaguard-test'
    cmd = [sys.executable, '-m', 'jupyter', 'server', '--no-browser', f'--port={port}', '--ServerApp.ip=127.0.0.1',
           f'--IdentityProvider.token={token}', '--ServerApp.root_dir=.', '--allow-root']
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}/api'
    for _ in range(120):
        try:
            urllib.request.urlopen(f'{base}/status?token={token}', timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    yield repo, base, token
    proc.terminate()
    proc.wait(timeout=30)


def _call(base, token, path, method='GET', body=None):
    req = urllib.request.Request(f'{base}/contents/{path}?token={token}', method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _kernelspec(base, token):
    with urllib.request.urlopen(f'{base}/kernelspecs?token={token}', timeout=30) as r:
        spec = json.loads(r.read())['kernelspecs']['python3']['spec']
    return dict(display_name=spec['display_name'], language=spec['language'], name='python3')


def test_opening_and_saving_a_notebook_unchanged_changes_no_file(server):
    repo, base, token = server
    before = {p: p.read_bytes() for p in (repo / 'nbs').rglob('*') if p.is_file()}
    model = _call(base, token, NB)
    # what JupyterLab does to the model when it connects the kernel: the kernelspec becomes the kernel's own
    model['content']['metadata']['kernelspec'] = _kernelspec(base, token)
    _call(base, token, NB, 'PUT', dict(type='notebook', format='json', content=model['content']))
    after = {p: p.read_bytes() for p in (repo / 'nbs').rglob('*') if p.is_file()}
    changed = [str(p.relative_to(repo)) for p in after if before.get(p) != after[p]]
    tracked = [c for c in changed if '.ipynb_checkpoints' not in c]  # the server's own checkpoints: ignored by git
    assert '.ipynb_checkpoints/' in (ROOT / '.gitignore').read_text().split()
    assert not tracked, f'saving an unchanged notebook rewrote {tracked}'


def test_an_edit_saved_in_the_lab_keeps_the_text_copy_paired(server):
    repo, base, token = server
    model = _call(base, token, NB)
    cell = next(c for c in model['content']['cells'] if c['cell_type'] == 'markdown')
    cell['source'] = cell['source'] + '\n\nAn edit made in JupyterLab.'
    _call(base, token, NB, 'PUT', dict(type='notebook', format='json', content=model['content']))
    py = (repo / 'nbs' / 'py' / Path(NB).name.replace('.ipynb', '.py')).read_text()
    assert '# An edit made in JupyterLab.' in py
    text = subprocess.run([sys.executable, '-m', 'jupytext', '--quiet', '--to', 'py:percent', '-o', '-', NB],
                          cwd=repo, capture_output=True, text=True, check=True).stdout
    assert text == py  # what `make check-pairs` compares
