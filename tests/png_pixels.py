"""Reading a saved PNG back as an RGB uint8 array: how the workflow tests compare images."""
import numpy as np
from PIL import Image


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()
