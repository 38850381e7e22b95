"""slabvol: the ax/vol_plugin FlexVolume driver (warm Docker graph storage on LVM slabs)."""

__version__ = "0.1.0"
DRIVER_NAME = "ax/vol_plugin"
