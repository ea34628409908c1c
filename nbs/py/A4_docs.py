# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: the README and the documentation site
#
# > The README generated from `index.ipynb` and the committed results; an offline documentation site from the executed notebooks.

# %% [markdown]
# `index.ipynb` is the project's front page. The README is made from it (nbdev's own `nbdev_readme`
# renders with Quarto, which cannot be installed without internet access to its binary), and so is
# the front page of the documentation site. Wherever the front page shows a result, it holds only a
# marker, `<!-- name -->` followed by `<!-- /name -->`, and the generator fills the marker from a
# committed file that committed code wrote from committed results:
#
# | marker | filled from | written by |
# |---|---|---|
# | `answer` | `outputs/figure1/paper/answer.md` | `python -m metaguard_nb.figure report --preset paper` (from `outputs/results/`) |
# | `figure:paper` | `outputs/figure1/paper/figure1.png` | the same command |
# | `robustness` | `outputs/robustness/summary.md` | `python -m metaguard_nb.robustness summary` (from `outputs/results/`) |
#
# A test checks that the committed README equals what this chapter generates, and that each filled
# file equals what its command makes from the committed results; another fails on a measured number
# typed into the README's prose or a chapter's markdown (`tests/test_numbers.py`). The README is a front
# page: the evidence behind each number is in the chapter that computes it (the full report in
# [04_figure1](04_figure1.ipynb), the ablation in [03c_ablation](03c_ablation.ipynb), the speed in
# [A3_bench](A3_bench.ipynb)).

# %%
#| default_exp docs

# %%
#| export
import argparse, json, shutil, subprocess, sys
from pathlib import Path

from metaguard_nb.data import checkout

# %%
from fastcore.test import test_eq, test_fail


# %% [markdown]
# ## The README

# %%
#| export
def _root() -> Path: return checkout() or Path.cwd()

def blocks(root:Path|None=None) -> dict:
    "The generated blocks of the front page, by marker name, each from its committed file."
    root = root or _root()
    paper = root/'outputs'/'figure1'/'paper'
    out = {'answer': (paper/'answer.md').read_text() if (paper/'answer.md').exists() else
                     '(no paper-protocol results yet: `make figure1-all PRESET=paper`)\n'}
    img = paper/'figure1.png'  # linked only where it exists, so the page never shows a missing image
    out['figure:paper'] = f'![Figure 1, paper protocol]({img.relative_to(root).as_posix()})\n' if img.exists() else '(no figure yet)\n'
    f = root/'outputs'/'robustness'/'summary.md'
    out['robustness'] = f.read_text() if f.exists() else '(the robustness study has not written its summary yet: `python -m metaguard_nb.robustness summary`)\n'
    return out

def fill(text:str, filled:dict) -> str:
    "Put each block between its markers `<!-- name -->` ... `<!-- /name -->` (whatever stood there before is replaced)."
    for name, body in filled.items():
        a, b = f'<!-- {name} -->', f'<!-- /{name} -->'
        if a in text and b in text: text = text[:text.index(a) + len(a)] + '\n' + body + text[text.index(b):]
    return text

def notebook_markdown(nb:Path) -> str:
    "A notebook as markdown: markdown cells as they are, code cells as python blocks (no outputs)."
    cells = json.loads(Path(nb).read_text())['cells']
    parts = []
    for c in cells:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

def readme(root:Path|None=None) -> str:
    "README.md's text: index.ipynb as markdown, its markers filled from the committed results."
    root = root or _root()
    head = '<!-- Generated from nbs/index.ipynb and the committed results by `make readme`; edit those, not this file. -->\n\n'
    return head + fill(notebook_markdown(root/'nbs'/'index.ipynb'), blocks(root))

def write_readme(root:Path|None=None) -> Path:
    "Write README.md (`readme`'s text) into the checkout; the one place that writes it (`make readme`, `figure report`)."
    root = root or _root()
    (root/'README.md').write_text(readme(root))
    return root/'README.md'


# %%
test_eq(fill('a <!-- x -->old<!-- /x --> b', {'x': 'new\n'}), 'a <!-- x -->\nnew\n<!-- /x --> b')
test_eq(fill('no markers', {'x': 'new'}), 'no markers')

# %% [markdown]
# ## The documentation site
#
# `make docs` builds a static site from the executed notebooks with Sphinx and myst-nb (from PyPI;
# pinned in `requirements-docs.txt`), math typeset by MathJax from the npm registry (copied into the
# site, so pages render without a network), outputs as saved in the notebooks (nothing is executed).
# The site goes to `_docs/`; open `_docs/index.html`.

# %%
#| export
MATHJAX = 'mathjax@3.2.2'  # from the npm registry; the site serves its own copy

def _mathjax(tools:Path) -> Path:
    "MathJax's es5 folder, installed once with npm under `tools`."
    es5 = tools/'node_modules'/'mathjax'/'es5'
    if not es5.exists():
        if not shutil.which('npm'): raise RuntimeError('npm is needed once to fetch MathJax for the docs: install Node.js and npm')
        subprocess.run(['npm', 'install', '--prefix', str(tools), '--no-audit', '--no-fund', '--silent', MATHJAX], check=True)
    return es5

CONF = """
project = 'metaguard_nb'
extensions = ['myst_nb']
myst_enable_extensions = ['dollarmath', 'amsmath']
nb_execution_mode = 'off'
html_theme = 'furo'
html_title = 'metaguard_nb: Meta Guard, a literate reference implementation'
html_static_path = ['_static']
mathjax_path = 'mathjax/tex-chtml.js'
exclude_patterns = ['_build', 'py', '**.ipynb_checkpoints']
suppress_warnings = ['mystnb.unknown_mime_type', 'myst.header', 'misc.highlighting_failure']
"""

def site(out:Path|None=None, root:Path|None=None) -> Path:
    "Build the documentation site into `out` (default _docs/); return the path of its front page."
    root = root or _root()
    out, src = Path(out or root/'_docs'), root/'_docs_src'
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(root/'nbs', src, ignore=shutil.ignore_patterns('py', '.ipynb_checkpoints'))
    for nb in src.glob('*.ipynb'):  # nbdev's directives (#| export, ...) are for the tools, not the reader
        d = json.loads(nb.read_text())
        for c in d['cells']:
            if c['cell_type'] == 'code': c['source'] = ''.join(l for l in ''.join(c['source']).splitlines(True) if not l.startswith('#|'))
        d['cells'] = [c for c in d['cells'] if c['cell_type'] != 'code' or c['source'].strip()]
        nb.write_text(json.dumps(d))
    index = json.loads((src/'index.ipynb').read_text())
    filled = blocks(root)
    for c in index['cells']:  # links and images of the README are relative to the repository's root
        if c['cell_type'] == 'markdown': c['source'] = fill(''.join(c['source']), filled).replace('](nbs/', '](').replace('](outputs/', '](../outputs/')
    chapters = [p.stem for p in sorted(src.glob('*.ipynb')) if p.stem != 'index'] + ['decisions']
    index['cells'].append(dict(cell_type='markdown', id='toctree', metadata={}, source='```{toctree}\n:maxdepth: 1\n:caption: Chapters\n\n' + '\n'.join(chapters) + '\n```\n'))
    (src/'index.ipynb').write_text(json.dumps(index))
    (src/'conf.py').write_text(CONF)
    shutil.copytree(_mathjax(root/'.docs_tools'), src/'_static'/'mathjax')
    subprocess.run([sys.executable, '-m', 'sphinx', '-q', '-b', 'html', str(src), str(out)], check=True)
    shutil.rmtree(src)
    return out/'index.html'

def main(argv=None):
    "python -m metaguard_nb.docs readme|site"
    ap = argparse.ArgumentParser(prog='python -m metaguard_nb.docs')
    ap.add_argument('what', choices=['readme', 'site'])
    a = ap.parse_args(argv)
    if a.what == 'readme': print('wrote', write_readme())
    else: print('site:', site())

if __name__ == '__main__' and not hasattr(__import__('builtins'), '__IPYTHON__'): main()  # not when a notebook runs this cell
