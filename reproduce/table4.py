"""Table IV: Table III's evaluation (reproduce/table3.py, same code) on ImageNet32; the
default preset is ``paper-imagenet32`` (pass --preset to run another)."""

import table3

if __name__ == "__main__":
    table3.main(name="table4", default_preset="paper-imagenet32", table="Table IV")
