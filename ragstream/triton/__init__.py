"""NVIDIA Triton Inference Server: the shared async client (``client``), the local server that
serves the project's models through PyTriton (``serve``, run from its own venv) and the process
that starts it (``server``)."""
