# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figure 1
#
# > `papermill nbs/04_figure1.ipynb out.ipynb -p setting c` regenerates one panel of the paper's
# > Figure 1 (`make figure1 SETTING=c`).
#
# The four panels (METHOD.md section 7):
#
# | setting | meta-train | meta-test |
# |---|---|---|
# | a | CNN & FashionMNIST | CNN & FashionMNIST |
# | b | CNN & FashionMNIST | MLP & FashionMNIST |
# | c | CNN & FashionMNIST | CNN & MNIST |
# | d | MLP & MNIST | CNN & FashionMNIST |
#
# **Status: not drawn yet.** The guards (issue 4) and the figure itself (issue 5) have not landed.
# This notebook checks its parameters and the data, then stops and says what is missing. It does
# not draw a figure.

# %% tags=["parameters"]
setting = 'c'  # the panel: a, b, c or d

# %%
SETTINGS = {'a': ('cnn', 'fashionmnist', 'cnn', 'fashionmnist'),
            'b': ('cnn', 'fashionmnist', 'mlp', 'fashionmnist'),
            'c': ('cnn', 'fashionmnist', 'cnn', 'mnist'),
            'd': ('mlp', 'mnist', 'cnn', 'fashionmnist')}
if setting not in SETTINGS:
    raise ValueError(f"setting={setting!r} is not a Figure 1 panel: use one of a, b, c, d")

# %%
from metaguard_nb.data import load
train_net, train_data, test_net, test_data = SETTINGS[setting]
split = load(test_data)
print(f'panel ({setting}): meta-train {train_net} & {train_data}, meta-test {test_net} & {test_data}; '
      f'test data ready ({len(split.y)} training examples)')

# %%
missing = ['metaguard_nb.guards (issue 4: SGD, L2O, LGL2O, SMG, AMG and the runner)',
           'the figure code (issue 5)']
print('Figure 1 is not drawn yet. Missing:\n- ' + '\n- '.join(missing))
