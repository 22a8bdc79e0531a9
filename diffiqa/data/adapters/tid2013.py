"""TID2013 (Ponomarenko et al., 2015).

Layout under the root: ``mos_with_names.txt`` (each line ``<MOS> <file name>``: the score comes
first), ``distorted_images/i01_01_1.bmp`` (reference ``01``, distortion type ``01``, level ``1``)
and ``reference_images/I01.BMP``. The label file spells names in lower case while the disk may
hold ``I01_01_1.BMP``: names are matched case-insensitively. MOS in [0, 9], higher is better.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, require_file, require_root
from diffiqa.errors import LabelError

# The 24 distortion types of TID2013, in the order of their ids.
TID2013_TYPES = (
    "additive_gaussian_noise", "color_noise", "spatially_correlated_noise", "masked_noise",
    "high_frequency_noise", "impulse_noise", "quantization_noise", "gaussian_blur",
    "image_denoising", "jpeg", "jpeg2000", "jpeg_transmission_errors",
    "jpeg2000_transmission_errors", "non_eccentricity_pattern_noise",
    "local_block_distortions", "mean_shift", "contrast_change", "color_saturation_change",
    "multiplicative_gaussian_noise", "comfort_noise", "lossy_compression_of_noisy_images",
    "color_quantization_with_dither", "chromatic_aberrations", "sparse_sampling_and_reconstruction",
)


def load_tid2013(root: Path) -> pd.DataFrame:
    root = require_root(root)
    label_file = require_file(root / "mos_with_names.txt", "label file")
    files = FolderLookup(root, "distorted_images")
    refs = FolderLookup(root, "reference_images")
    records = []
    for lineno, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise LabelError(f"{label_file}, row {lineno}: expected '<MOS> <file name>', got {line.strip()!r}")
        score, name = fields
        parts = Path(name).stem.split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in (parts[0][1:], parts[1], parts[2])):
            raise LabelError(f"{label_file}, row {lineno} (image {name!r}): name is not of the form i01_01_1.bmp")
        ref_id, type_id, level = parts[0].upper(), int(parts[1]), int(parts[2])
        if not 1 <= type_id <= len(TID2013_TYPES):
            raise LabelError(f"{label_file}, row {lineno} (image {name!r}): distortion id {type_id} is not 1..24")
        records.append(
            {
                "image": files.rel(name),
                "mos": score,
                "content": ref_id,
                "distortion": TID2013_TYPES[type_id - 1],
                "level": level,
                "reference": refs.rel(f"{ref_id}.BMP"),
                "label_row": lineno,
            }
        )
    return frame(records, label_file, higher_better=True)
