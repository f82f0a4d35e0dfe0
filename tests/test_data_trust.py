"""What a caller may make the service read: paths parsed once and confined to the operator's roots, sizes measured
before bytes are read, images decoded only as PNG or JPEG within a pixel limit (docs/security.md, "Data")."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shared.data import DataError
from shared.data.decode import Transform, pixel_limit
from shared.data.paths import check_roots, confine
from shared.data.sources import MAX_SOURCE_RECORDS, ReadLimits, open_source
from shared.tasks.text.data import read_text_source


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "images").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("the server's own file")
    return tmp_path / "root"


def test_a_path_under_a_root_is_opened_as_its_resolved_self(root):
    (root / "link").symlink_to(root / "images")
    assert confine(str(root / "images"), (str(root),), "data.source") == str(root / "images")
    assert confine(str(root / "link"), (str(root),), "data.source") == str(root / "images")
    assert confine("s3://bucket/d/x", ("s3://bucket/d",), "data.source") == "s3://bucket/d/x"
    assert confine("s3://bucket/d", ("s3://bucket/d/",), "data.source") == "s3://bucket/d"


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("{root}/../secret.txt", "'..' segments"),
        ("{root}/./images", "'..' segments"),
        ("file:{root}/images", "absolute path or s3://"),
        ("file://{root}/images", "absolute path or s3://"),
        ("http://example.com/x", "absolute path or s3://"),
        ("images", "absolute path or s3://"),
        ("{root}/images\x00", "control characters"),
        ("{root}/images\n", "control characters"),
        ("{root}/../secret.txt", "not allowed"),
        ("{root}-sibling/x", "outside the data roots"),
        ("{root}/escape", "outside the data roots"),
        ("s3://bucket/d/../x", "'..' segments"),
        ("s3://bucket/dx/y", "outside the data roots"),
        ("s3://other/d/x", "outside the data roots"),
        ("s3://Bad_Bucket/d", "not an S3 bucket name"),
    ],
)
def test_a_path_outside_the_roots_or_in_another_form_is_refused_naming_the_field_only(root, uri, reason):
    (root / "escape").symlink_to(root.parent / "secret.txt")
    with pytest.raises(DataError) as refused:
        confine(uri.format(root=root), (str(root), "s3://bucket/d"), "text.source")
    message = str(refused.value)
    assert message.startswith("text.source: ") and reason in message, message
    assert str(root) not in message and "secret" not in message


def test_roots_must_be_absolute_folders_or_s3_prefixes():
    assert check_roots(("/srv/data", "s3://bucket/p")) == ("/srv/data", "s3://bucket/p")
    for bad in ("data", "file:///srv", "/srv/../etc", "s3://b"):
        with pytest.raises(ValueError, match="DBLOCKS_DATA_ROOTS"):
            check_roots((bad,))


def test_a_symlink_inside_a_confined_folder_that_leads_out_is_never_opened(root):
    folder = root / "images"
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    (folder / "c.png").symlink_to(root.parent / "secret.txt")
    assert len(open_source(str(folder)).files) == 3  # the machine's own user: links are followed
    with pytest.raises(DataError, match="'c.png' leads outside the source's folder") as refused:
        open_source(str(folder), limits=ReadLimits(confined=True))
    assert "secret" not in str(refused.value)
    books = root / "books"
    books.mkdir()
    (books / "a.txt").write_text("inside")
    (books / "b.txt").symlink_to(root.parent / "secret.txt")
    with pytest.raises(DataError, match="leads outside"):
        read_text_source(str(books), limits=ReadLimits(confined=True))


def test_text_is_measured_before_it_is_read(root):
    (root / "big.txt").write_text("x" * 5000)
    assert read_text_source(str(root / "big.txt"), limits=ReadLimits(max_read_bytes=5000))[0] == "x" * 5000
    with pytest.raises(DataError, match="5,000 bytes, more than the 4,999 read whole"):
        read_text_source(str(root / "big.txt"), limits=ReadLimits(max_read_bytes=4999))


def test_an_npz_member_is_measured_before_it_is_inflated(root):
    np.savez_compressed(root / "zeros.npz", images=np.zeros((64, 1, 8, 8), np.float32))
    assert open_source(str(root / "zeros.npz"), limits=ReadLimits(max_read_bytes=64 * 64 * 4 + 128)).labelled is False
    with pytest.raises(DataError, match=r"array 'images' inflates to 16,512 bytes, more than the 16,000"):
        open_source(str(root / "zeros.npz"), limits=ReadLimits(max_read_bytes=16_000))


def test_a_parquet_footer_is_checked_before_its_rows_are_read(root):
    table = pa.table({"image": pa.nulls(1000, pa.binary()), "label": pa.nulls(1000, pa.int64())})
    pq.write_table(table, root / "rows.parquet", row_group_size=100)
    with pytest.raises(DataError, match=r"row group 0 holds [\d,]+ bytes, more than the 10 read at once"):
        open_source(str(root / "rows.parquet"), limits=ReadLimits(max_read_bytes=10))
    assert MAX_SOURCE_RECORDS < 10**9  # the hostile service test's 10^9-row footer is refused by this bound


def test_images_decode_only_as_png_or_jpeg_within_the_pixel_limit():
    def encoded(fmt: str, size: tuple[int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size).save(out, format=fmt)
        return out.getvalue()

    assert Transform(image_size=8, resize="resize")(encoded("PNG", (16, 16)), "a.png").shape == (3, 8, 8)
    for fmt in ("GIF", "BMP", "TIFF"):
        with pytest.raises(DataError, match="not PNG or JPEG"):
            Transform()(encoded(fmt, (8, 8)), f"a.{fmt.lower()}")
    assert pixel_limit(32) == 4096**2 and pixel_limit(512) == 8192**2
    with pytest.raises(DataError, match=r"4097x4096 pixels, more than the 16,777,216 decoded per image"):
        Transform(image_size=32, resize="resize")(encoded("PNG", (4097, 4096)), "huge.png")
