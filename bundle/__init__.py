"""The serving-bundle contract, torch-free: what ``training.export`` writes and
``service.engine`` reads (manifest schema, format version, state tensor specs, graph roles,
file hashes, the item and popularity files, the optional item catalogue). Both sides
import it from here."""

from bundle.catalog import CATALOG_FILE, CatalogEntry, read_catalog, write_catalog
from bundle.files import (
    read_items,
    read_popular,
    sha256_file,
    verify_files,
    versions_newest_first,
    write_items,
    write_popular,
)
from bundle.manifest import (
    DTYPE_SIZES,
    FORMAT_VERSION,
    GRAPH_ROLES,
    ITEMS_FILE,
    MANIFEST_FILE,
    POPULAR_FILE,
    SUPPORTED_FORMAT_VERSIONS,
    VERSION_PATTERN,
    BundleError,
    GraphSpec,
    Manifest,
    StateSpec,
    next_name,
)

__all__ = [
    "CATALOG_FILE", "DTYPE_SIZES", "FORMAT_VERSION", "GRAPH_ROLES", "ITEMS_FILE",
    "MANIFEST_FILE", "POPULAR_FILE", "SUPPORTED_FORMAT_VERSIONS", "VERSION_PATTERN",
    "BundleError", "CatalogEntry", "GraphSpec", "Manifest", "StateSpec", "next_name",
    "read_catalog", "read_items", "read_popular", "sha256_file", "verify_files",
    "versions_newest_first", "write_catalog", "write_items", "write_popular",
]
