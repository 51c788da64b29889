"""Stanford Online Products as a TFDS builder with `manual_dir`, and its DML loader (METHOD §5.4)."""

from __future__ import annotations

from data_pipelines.builders import common, reading

HEADER = ["image_id", "class_id", "super_class_id", "path"]


class Sop(common.BenchmarkBuilder):
    """Stanford Online Products split for deep metric learning (METHOD §5.4).

    Reads `Stanford_Online_Products/Ebay_train.txt` and `Ebay_test.txt` (header
    "image_id class_id super_class_id path", then one image per line, path like
    "bicycle_final/111085122871_0.JPG"). Label = class_id − 1: "train" has 59,551 images with labels
    0-11317, "test" 60,502 images with labels 11318-22633 (only compared), each in file order.

    Registered as "ccpdml_sop".
    """

    name = "ccpdml_sop"
    RELEASE_NOTES = {"1.0.0": "DML split: Ebay_train.txt / Ebay_test.txt."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Place in the manual directory either the archive `Stanford_Online_Products.zip` or the
    folder it unpacks to, `Stanford_Online_Products/` (Ebay_train.txt, Ebay_test.txt and the
    <category>_final/ image folders). Project page:
    https://cvgl.stanford.edu/projects/lifted_struct/ (the original
    ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip is offline: use a mirror of that
    same file).
    """
    DISPLAY_NAME = "Stanford Online Products"
    SHORT_NAME = "sop"
    # Where the images are: PARTS[IMAGE_PART], and IMAGE_PREFIX + file_name is their name in
    # the archive (used to name undecodable images).
    IMAGE_PART = 0
    IMAGE_PREFIX = "Stanford_Online_Products/"
    PARTS = (
        common.Part(
            "Stanford_Online_Products",
            ("Ebay_train.txt", "Ebay_test.txt"),
            ("Stanford_Online_Products.zip",),
        ),
    )

    DESCRIPTION = "Stanford Online Products, DML split (METHOD §5.4)."
    HOMEPAGE = "https://cvgl.stanford.edu/projects/lifted_struct/"
    WITH_BBOX = False
    LABELS = "train labels 0-11317, test labels 11318-22633; METHOD §5.4"

    def _split_generators(self, dl_manager):
        (root,) = common.resolve_manual_parts(self, dl_manager)
        return {
            "train": self._generate_examples(root, root / "Ebay_train.txt"),
            "test": self._generate_examples(root, root / "Ebay_test.txt"),
        }

    def _generate_examples(self, root, list_file):
        for key, (rel, label) in enumerate(read_list(list_file)):
            yield (
                key,
                {
                    "image": common.image_file(root, rel, list_file),
                    "label": label,
                    "file_name": rel,
                },
            )


def read_list(path) -> list[tuple[str, int]]:
    """(relative image path, label = class_id − 1) per line of an Ebay_*.txt file."""
    lines = common.read_lines(path)
    if not lines or lines[0].split() != HEADER:
        got = lines[0] if lines else "an empty file"
        raise common.format_error(path, 1, f"the header {' '.join(HEADER)!r}", got)
    rows = []
    for n, line in enumerate(lines[1:], 2):
        fields = line.split()
        if len(fields) != 4 or not all(v.isdigit() for v in fields[:3]):
            raise common.format_error(
                path, n, "'<image_id> <class_id> <super_class_id> <path>'", line
            )
        rows.append((fields[3], int(fields[1]) - 1))
    return rows


load_sop = reading.loader(Sop)
