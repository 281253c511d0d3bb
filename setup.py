"""Packaging hook for what pyproject.toml cannot say: ship ``configs/`` as the package ``daq._configs``.

The shipped configuration files stay at the top of the repository, where people edit them; the wheel
(and the editable install) map that folder into the ``daq`` package so the installed program finds
them through ``importlib.resources``. See docs/adr/0007-shipped-configs-as-package-data.md.
"""

from setuptools import find_packages, setup

CODE_PACKAGES = find_packages(include=["daq*", "drivers*", "simulators*"])

setup(
    packages=[*CODE_PACKAGES, "daq._configs"],
    package_dir={"daq._configs": "configs"},
)
