"""Activation steering from the research: steering vectors (CAA), activation patching and sparse
autoencoders on a diffusion U-Net's modules.

- :mod:`.files`     file formats, lookup and the model fingerprint;
- :mod:`.vectors`   steering vectors: the file and its per-step resource;
- :mod:`.sae`       the top-k sparse autoencoder: the module and its file;
- :mod:`.probes`    recording and patching module activations during a render;
- :mod:`.caa`       building steering vectors from two prompt sets;
- :mod:`.patching`  the patching experiment and its map;
- :mod:`.sae_train` training an autoencoder on a module's activations, and its feature sheets.

The bends ``steer`` and ``sae_feature`` (``server.operators.steering``) apply them.
"""
