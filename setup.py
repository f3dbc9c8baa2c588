"""The optional compiled stack reader; everything else is in pyproject.toml.

The extension is built where a C compiler and the Python headers are found
(``optional=True``: a failed build leaves the pure-Python reader, which the
package falls back to at import). It is not built for free-threaded CPython,
where the sampler is off.
"""

import sysconfig

from setuptools import Extension, setup

free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

setup(
    ext_modules=[]
    if free_threaded
    else [
        Extension(
            "flask_perfalert.profiling._stackreader",
            ["src/flask_perfalert/profiling/_stackreader.c"],
            optional=True,
        )
    ]
)
