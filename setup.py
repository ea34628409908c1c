"Minimal setuptools entry point: metadata comes from settings.ini (the nbdev 2 layout)."
from configparser import ConfigParser
from setuptools import setup, find_packages

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini')
c = cfg['DEFAULT']
setup(name=c['lib_name'], version=c['version'], description=c['description'],
      author=c['author'], license=c['license'], python_requires='>=' + c['min_python'],
      packages=find_packages(include=[c['lib_name'], c['lib_name'] + '.*']),
      install_requires=c['requirements'].split(), zip_safe=False,
      entry_points={'console_scripts': ['metaguard-metatrain=metaguard_nb.metatrain:metatrain_cli']})
