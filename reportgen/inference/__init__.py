"""Everything that needs torch: the model, the batched pipeline, Grad-CAM, pictures of activations.

Nothing outside this package imports torch, and the build imports this package only when some
photo is missing from the cache (:func:`reportgen.inference.stage.run_model`).
"""
