"""What the decoding workers do: read any photo into RGB, and crop it as the model needs (Pillow
only, so workers start decoding before torchvision is even imported)."""
