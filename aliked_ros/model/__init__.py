"""The ALIKED network, its detector and its weights.

``configs`` is plain Python (no torch), so that code which only needs model names and sizes, such as a deployment
running a prebuilt TensorRT engine, imports it without torch. The other modules need torch.
"""
