"""Convert an LMDB image feature store (the released layout) to the HDF5 layout.

    python preprocessing/convert_features.py -input data/visdial/visdial_img_feat.lmdb \
        -output data/visdial/visdial_img_feat.h5

The HDF5 layout is documented in `dataloader.feature_store.write_hdf5_feature_store`; both stores give
identical values through `dataloader.feature_store.open_feature_store`.
"""
import argparse

from tqdm import tqdm

from utils.errors import UserError, run_cli
from dataloader.feature_store import LmdbFeatureStore, open_feature_store, write_hdf5_feature_store


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert an LMDB image feature store to HDF5")
    parser.add_argument("-input", "--input", required=True, help="LMDB feature store (folder or data.mdb)")
    parser.add_argument("-output", "--output", required=True, help="HDF5 file to write")
    return parser.parse_args(argv)


def convert_lmdb_to_hdf5(input_path: str, output_path: str, show_progress: bool = True) -> int:
    """Copy every image of the LMDB store at `input_path` into a new HDF5 file; returns the count."""
    store = open_feature_store(input_path)
    if not isinstance(store, LmdbFeatureStore):
        raise UserError(f"{input_path}: is not an LMDB feature store")
    image_ids = store.image_ids()
    if not image_ids:
        raise UserError(f"{input_path}: feature store holds no images")
    max_boxes = max(store.stored_num_boxes(image_id)
                    for image_id in tqdm(image_ids, desc="scanning", disable=not show_progress))
    # closed before an error propagates, so the error stays the last line on the terminal
    with tqdm(image_ids, desc="converting", disable=not show_progress) as progress:
        records = (store.read_raw(image_id) for image_id in progress)
        return write_hdf5_feature_store(output_path, records, num_images=len(image_ids), max_boxes=max_boxes)


def main(argv=None) -> None:
    args = parse_args(argv)
    count = convert_lmdb_to_hdf5(args.input, args.output)
    print(f"wrote {count} images to {args.output}")


if __name__ == "__main__":
    run_cli(main)
