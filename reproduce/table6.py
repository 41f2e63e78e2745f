"""Table VI: Table V's removal attacks (reproduce/table5.py, same code) on ImageNet32; the
default preset is ``paper-imagenet32`` (pass --preset to run another)."""

import table5

if __name__ == "__main__":
    table5.main(name="table6", default_preset="paper-imagenet32", table="Table VI")
