"""Convert an LMDB image feature store (the released layout) to the HDF5 layout.

    python preprocessing/convert_features.py -input data/visdial/visdial_img_feat.lmdb \
        -output data/visdial/visdial_img_feat.h5

The HDF5 layout is documented in `dataloader.feature_store.write_hdf5_feature_store`; both stores
give identical values through `dataloader.feature_store.open_feature_store`. The output may be
neither the input nor inside it; it is written atomically (SIGTERM or Ctrl-C leave no partial file).
"""
import argparse
from pathlib import Path

from dataloader.feature_store import convert_lmdb_to_hdf5
from utils.errors import run_cli
from utils.outputs import Output, check_outputs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert an LMDB image feature store to HDF5")
    parser.add_argument("-input", "--input", required=True, help="LMDB feature store (folder or data.mdb)")
    parser.add_argument("-output", "--output", required=True, help="HDF5 file to write")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_outputs([Output("-output", Path(args.output), what="the HDF5 feature store")], {"-input": args.input})
    count = convert_lmdb_to_hdf5(args.input, args.output)
    print(f"wrote {count} images to {args.output}")


if __name__ == "__main__":
    run_cli(main)
