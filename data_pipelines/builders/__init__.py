"""TFDS builders (with `manual_dir`) for the four DML benchmarks and their loaders (METHOD §5)."""

from data_pipelines.builders.cars196 import Cars196, load_cars196
from data_pipelines.builders.cli import BUILDERS, prepare, prepare_main
from data_pipelines.builders.cub200 import Cub200, load_cub200
from data_pipelines.builders.inshop import InShop, load_inshop
from data_pipelines.builders.manual_files import ManualDataError, MissingManualFilesError
from data_pipelines.builders.sop import Sop, load_sop

LOADERS = {"cub200": load_cub200, "cars196": load_cars196, "sop": load_sop, "inshop": load_inshop}

__all__ = [
    "BUILDERS",
    "Cars196",
    "Cub200",
    "InShop",
    "LOADERS",
    "ManualDataError",
    "MissingManualFilesError",
    "Sop",
    "load_cars196",
    "load_cub200",
    "load_inshop",
    "load_sop",
    "prepare",
    "prepare_main",
]
