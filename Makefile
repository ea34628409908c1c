# The project's commands. Each target does all of its own set-up and is idempotent:
# a second run skips finished steps in seconds.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SETTING ?= c
PRESET ?= quick
DEVICE ?= cpu
DATA ?= $(CURDIR)/data
export METAGUARD_DATA := $(DATA)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed
FIG := outputs/figure1

.PHONY: setup data test figure1 figure1-all figure1-paper lab sync readme docs check-pairs checkpoints bench ablation notebooks

# Fail at once, before any set-up, on a setting that is not a panel of Figure 1 or a preset that is not one.
ifneq ($(filter figure1 figure1-all figure1-paper,$(MAKECMDGOALS)),)
ifneq ($(words $(SETTING))$(filter $(SETTING),a b c d),1$(SETTING))
$(error SETTING='$(SETTING)' is not a Figure 1 panel: use one of a, b, c, d (for example: make figure1 SETTING=c))
endif
ifneq ($(words $(PRESET))$(filter $(PRESET),tiny quick paper),1$(PRESET))
$(error PRESET='$(PRESET)' is not a protocol: use one of tiny, quick, paper (for example: make figure1 PRESET=paper))
endif
ifneq ($(words $(DEVICE))$(filter cpu cuda cuda:%,$(DEVICE)),1$(DEVICE))
$(error DEVICE='$(DEVICE)' is not a device: use cpu or cuda (for example: make figure1 DEVICE=cuda))
endif
endif

# The venv's Jupyter kernel is registered as the notebooks name it ("python3", the display name nbdev_clean
# writes), and JupyterLab's autosave is off: opening and reading a notebook never rewrites it.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
$(STAMP): requirements.txt setup.py settings.ini
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name python3 > /dev/null
	@mkdir -p $(dir $(LAB_SETTINGS)) && echo '{"@jupyterlab/docmanager-extension:plugin": {"autosave": false}}' > $(LAB_SETTINGS)
	@touch $@

setup: $(STAMP)

$(DATA)/.prepared: | $(STAMP)
	$(PY) -c "from metaguard_nb.prepare import prepare; print('data ready in', prepare())"
	@touch $@

data: $(DATA)/.prepared

# The suite runs the LSTM step eagerly (compiling every small shape would cost minutes); the tests
# that compare the compiled step with the eager one ask for compile=True themselves.
test: setup data
	METAGUARD_COMPILE=0 nbdev_test --n_workers 1 --timing
	$(PY) -m pytest -q tests

# One panel: parameters checked in one line, then papermill into a temporary notebook that replaces the
# panel's executed notebook only when the run succeeded (a failed run leaves every shipped file as it was),
# without its clock times or papermill's random cell id (drop-run-times), so a rerun that computes the same panel leaves the checkout clean.
figure1: setup data
	@$(PY) -m metaguard_nb.figure check --setting $(SETTING) --preset $(PRESET) --device $(DEVICE)
	@mkdir -p $(FIG)/$(PRESET)
	papermill nbs/04_figure1.ipynb $(FIG)/$(PRESET)/.$(SETTING).running.ipynb -p setting $(SETTING) -p preset $(PRESET) -p device $(DEVICE) -k python3 \
	  && $(PY) -m metaguard_nb.figure drop-run-times $(FIG)/$(PRESET)/.$(SETTING).running.ipynb \
	  && mv $(FIG)/$(PRESET)/.$(SETTING).running.ipynb $(FIG)/$(PRESET)/$(SETTING).ipynb

# All four panels of a protocol, then its report (2x2 figures, table, verdicts) from the results store.
figure1-all: setup data
	@$(PY) -m metaguard_nb.figure check --preset $(PRESET) --device $(DEVICE)
	for s in a b c d; do $(MAKE) --no-print-directory figure1 SETTING=$$s PRESET=$(PRESET) DEVICE=$(DEVICE) || exit 1; done
	$(PY) -m metaguard_nb.figure report --preset $(PRESET) > /dev/null

# The paper's protocol (4 panels x 7 methods x 25 seeds x 2,000 steps) on Dask: only the seeds missing from the
# results store are computed (SCHEDULER=tcp://host:8786 sends them to an existing cluster), then the report.
SCHEDULER ?=
figure1-paper: setup data
	$(PY) -m metaguard_nb.grid --device $(DEVICE) $(if $(SCHEDULER),--scheduler $(SCHEDULER))
	$(PY) -m metaguard_nb.figure report --preset paper > /dev/null

lab: setup data
	jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/nbs $(if $(filter 0,$(shell id -u)),--allow-root)

# Execute the chapters in place, so JupyterLab and the documentation site show their figures and tables on open
# (the heavy ones are drawn from the committed results in outputs/, not recomputed); then clean and re-pair.
# Run after make figure1-all PRESET=quick and make ablation; about 20 minutes here. The demonstrations run eager
# (METAGUARD_COMPILE=0, as under the tests); 04_figure1 keeps the default, so it reads the committed quick-protocol seeds,
# whose key includes the compile setting, instead of computing them again. NOTEBOOKS=nbs/06_your_model.ipynb runs one.
NOTEBOOKS ?= $(wildcard nbs/0*.ipynb nbs/A*.ipynb)
notebooks: setup data
	for nb in $(NOTEBOOKS); do echo $$nb; case $$nb in *04_figure1*) c=1;; *) c=0;; esac; \
	  METAGUARD_COMPILE=$$c jupyter nbconvert --log-level=WARN --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=-1 --ExecutePreprocessor.kernel_name=python3 $$nb || exit 1; done
	$(MAKE) --no-print-directory sync

# After editing a notebook or its text copy: pair, clean, export, and the README from index.ipynb.
sync: setup
	jupytext --quiet --sync nbs/*.ipynb nbs/py/*.py
	nbdev_clean
	touch nbs/*.ipynb && jupytext --quiet --sync nbs/*.ipynb
	nbdev_export
	$(PY) -m metaguard_nb.docs api > /dev/null
	$(PY) -m metaguard_nb.docs readme > /dev/null

readme: setup
	$(PY) -m metaguard_nb.docs readme

# The documentation site, offline: Sphinx + myst-nb (requirements-docs.txt), MathJax from npm; -> _docs/index.html
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): requirements-docs.txt | $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-docs.txt
	@touch $@
docs: setup $(DOCS_STAMP)
	$(PY) -m metaguard_nb.docs site

# The jupytext text copies in nbs/py must equal what the notebooks give, and README.md what index.ipynb gives.
check-pairs: setup
	@status=0; for nb in nbs/*.ipynb; do py=nbs/py/$$(basename $${nb%.ipynb}).py; \
	  jupytext --quiet --to py:percent -o - $$nb | diff -q - $$py >/dev/null || { echo "out of sync: $$nb vs $$py (run make sync)"; status=1; }; \
	done; for py in nbs/py/*.py; do nb=nbs/$$(basename $${py%.py}).ipynb; \
	  test -f $$nb || { echo "$$py has no notebook $$nb (run make sync)"; status=1; }; done; \
	$(PY) -c "from metaguard_nb.docs import readme; import sys; sys.exit(open('README.md').read() != readme())" \
	  || { echo "README.md is not what nbs/index.ipynb and the committed results give (run make readme)"; status=1; }; exit $$status

# Regenerate the shipped meta-trained optimizers (Eq. 2), one setting per process, resumable; fails when either fails.
# MEMORY=mean: the pair meta-trained as g^T defines it (the 'gT' variant), in outputs/checkpoints/gT/, with the settings'
# windows (metatrain.SETTINGS); WINDOWS=N sets both settings' windows (a finished run asked for more is extended).
MEMORY ?= carry
CK_DIR := outputs/checkpoints$(if $(filter mean,$(MEMORY)),/gT)
CK_ARGS := --threads 1 --memory $(MEMORY) $(if $(WINDOWS),--windows $(WINDOWS))
checkpoints: setup data
	@mkdir -p $(CK_DIR)
	metaguard-metatrain cnn_fashionmnist $(CK_ARGS) --out $(CK_DIR)/cnn_fashionmnist.pt & a=$$!; \
	metaguard-metatrain mlp_mnist $(CK_ARGS) --out $(CK_DIR)/mlp_mnist.pt & b=$$!; \
	wait $$a; ra=$$?; wait $$b; rb=$$?; \
	test $$ra = 0 -a $$rb = 0 || { echo "make checkpoints: a meta-training failed (cnn_fashionmnist rc $$ra, mlp_mnist rc $$rb)"; exit 1; }

# Seed-steps per second of every method, ours against the plain eager reference (nbs/A3_bench).
bench: setup data
	$(PY) -m metaguard_nb.bench --device $(DEVICE) --out outputs/bench$(if $(filter-out cpu,$(DEVICE)),_$(DEVICE)).json

# The fit/judge ablation of the adapting guards (nbs/03c_ablation): AMG and SMG on panels a and c, 8 seeds x 300
# steps, three variants -> outputs/ablation/*.csv (finished combinations are kept; about 80 minutes here).
ablation: setup data
	$(PY) -m metaguard_nb.ablation
