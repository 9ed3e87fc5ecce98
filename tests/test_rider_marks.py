"""D1's RIDER negatives each carry a small yellow arrow. This test uses only what 4d8f8d4 already had
(`ladnn.report.marks.mark_table` and its `marked` column), so it fails there, where the arrows were missed, and passes
now."""


def test_every_rider_arrow_is_found(data_dir):
    from ladnn.data import load_table
    from ladnn.report.marks import mark_table

    table = load_table("D0+D1")
    rider = table[table["collection"].str.contains("RIDER")]
    found = mark_table(rider)
    assert len(found) == 32
    missed = sorted(found.loc[~found["marked"], "name"])
    assert not missed, f"{len(missed)} of 32 RIDER arrows missed, e.g. {missed[:3]}"
