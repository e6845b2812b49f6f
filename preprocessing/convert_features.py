"""Convert image features into a feature store the datasets read (LMDB or HDF5, by the output name;
the input formats: docs/data.md).

    python preprocessing/convert_features.py -input data/visdial/visdial_img_feat.lmdb \
        -output data/visdial/visdial_img_feat.h5
    # the bottom-up-attention TSV (give all its files), the challenge starter's HDF5, a folder of .npz
    python preprocessing/convert_features.py -input trainval_36.tsv -output features.lmdb
    python preprocessing/convert_features.py -input features_faster_rcnn_x101_val.h5 -output val.h5
    python preprocessing/convert_features.py -input my_detections/ -output my_features.h5
"""
import argparse
from pathlib import Path

from dataloader.feature_formats import LMDB_SUFFIX, convert_features
from utils.errors import ArgumentParser, note_on_stderr, run_cli
from utils.outputs import Output, check_outputs


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description="Convert image features (LMDB, HDF5, bottom-up-attention TSV, "
                                                 "challenge-starter HDF5, a folder of .npz) into a feature store")
    parser.add_argument("-input", "--input", required=True, nargs="+",
                        help="feature file(s) or folder(s), the format recognised from each")
    parser.add_argument("-output", "--output", required=True,
                        help="the store to write: NAME.h5 / NAME.hdf5 (HDF5) or NAME.lmdb (LMDB folder)")
    parser.add_argument("-quiet", "--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    is_lmdb = Path(args.output).suffix.lower() == LMDB_SUFFIX  # a folder (the name is checked after the paths)
    check_outputs([Output("-output", Path(args.output), is_folder=is_lmdb, what="the feature store")],
                  {"-input" if len(args.input) == 1 else f"-input {path}": path for path in args.input})
    count, width = convert_features(args.input, args.output, note=note_on_stderr, show_progress=not args.quiet)
    print(f"wrote {count} images ({width}-d features) to {args.output}")


if __name__ == "__main__":
    run_cli(main)
