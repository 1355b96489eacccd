"""reportgen: a static website showing how a pretrained AlexNet sees a folder of photographs."""

__version__ = "0.1.0"
