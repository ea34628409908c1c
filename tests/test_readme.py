"The README is generated, its numbers come from committed results by committed code, and its example runs as written."
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import markdown_of

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_what_the_index_and_the_committed_results_give():
    from metaguard_nb.docs import readme
    assert (ROOT / 'README.md').read_text() == readme(), 'README.md is stale: run make readme'


def test_the_front_page_notebook_shows_what_the_readme_shows():
    "index.ipynb's markers hold the README's blocks, with links relative to nbs/, so JupyterLab shows the answer on open."
    from metaguard_nb.docs import front_page
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    assert nb == front_page(), 'nbs/index.ipynb is stale: run make readme'
    assert '<!-- answer -->\n**Does AMG beat every baseline' in ''.join(''.join(c['source']) for c in nb['cells'])


@pytest.mark.parametrize('preset', ['quick', 'paper'])
def test_each_committed_report_is_what_the_results_store_gives(preset, tmp_path, monkeypatch):
    from metaguard_nb.figure import write_report as report
    committed = ROOT / 'outputs' / 'figure1' / preset / 'report.md'
    if not committed.exists():
        pytest.skip(f'no {preset} report committed yet')
    # The report names its sources (device, compiled step) itself: the suite's eager setting (conftest) must not matter.
    monkeypatch.setenv('METAGUARD_COMPILE', '0')
    text = report(preset, out=tmp_path).replace(str(tmp_path), f'outputs/figure1/{preset}')  # the folder named, the figure linked
    assert text == committed.read_text()
    for name in ('answer.md', 'paired.csv'):  # the README's answer and the full paired table come from the same store
        if (committed.parent / name).exists():
            assert (tmp_path / name).read_text() == (committed.parent / name).read_text(), name


def test_the_robustness_summary_is_what_the_store_gives(tmp_path):
    from metaguard_nb.robustness import summary
    committed = ROOT / 'outputs' / 'robustness' / 'summary.md'
    if not committed.exists():
        pytest.skip('no robustness summary committed yet')
    assert summary(out=tmp_path / 'summary.md') == committed.read_text()


def test_the_ablation_summary_is_what_its_csvs_give():
    from metaguard_nb.ablation import ablation_dir, load_ablation, summary_markdown
    committed = ablation_dir() / 'summary.md'
    if not committed.exists():
        pytest.skip('no ablation committed yet')
    assert summary_markdown(*load_ablation()) == committed.read_text()


def test_the_readme_example_runs_as_written(tmp_path):
    text = (ROOT / 'README.md').read_text()
    code = re.search(r'<!-- example -->\n```python\n(.*?)```\n<!-- /example -->', text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    branch, loss = r.stdout.strip().rsplit(' ', 1)
    assert branch.startswith('[') and float(loss) < 2.31  # it trained: below chance after 20 steps


def test_every_chapter_that_exports_ends_with_its_current_api_reference(tmp_path):
    import json, shutil
    from metaguard_nb.docs import _api_cells, stale_api
    exporting = [nb for nb in sorted((ROOT / 'nbs').glob('*.ipynb')) if '#| default_exp' in nb.read_text()]
    for nb in exporting:
        assert _api_cells(json.loads(nb.read_text())), f'{nb.name} has no API reference cell'
    assert stale_api() == [], 'a saved API reference is stale: run make sync'
    # The check can fail: a docment changed in the code but not in the saved output is caught.
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs', ignore=shutil.ignore_patterns('py'))
    nb = tmp_path / 'nbs' / 'A1_persist.ipynb'
    nb.write_text(nb.read_text().replace('the file to write', 'a file'))
    assert stale_api(tmp_path) == ['A1_persist.ipynb (persist)']


def test_every_relative_link_resolves():
    "Each relative link and image of README.md (from the root) and of the chapters and decisions.md (from nbs/, as JupyterLab opens them) names a file."
    from metaguard_nb.docs import LINK  # the relative targets: not a URL, an anchor or an absolute path
    pages = [(ROOT / 'README.md', (ROOT / 'README.md').read_text()), (ROOT / 'nbs' / 'decisions.md', (ROOT / 'nbs' / 'decisions.md').read_text())]
    pages += [(nb, markdown_of(nb)) for nb in sorted((ROOT / 'nbs').glob('*.ipynb'))]
    broken = [f'{page.relative_to(ROOT)}: {t}' for page, text in pages for t in re.findall(LINK, text)
              if not (page.parent / t.split('#')[0]).exists()]
    assert len(pages) > 20 and not broken, broken
