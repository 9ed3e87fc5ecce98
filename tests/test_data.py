import pandas as pd
import pytest

from ladnn.data import DataError, check, load_table, parse_label_csv, source_of, subset

HEADER = "imgname,CVD19,GGO,Csld,CrPa,AirBr,InSepThi\n"


def test_d0_table_matches_the_split_files(data_dir):
    df = load_table("D0")
    assert len(df) == 746
    assert df["split"].value_counts().to_dict() == {"train": 425, "test": 203, "val": 118}
    assert df["covid"].sum() == 349
    assert df["image"].map(lambda p: p.endswith((".png", ".jpg"))).all()
    # every positive is annotated in the meta-info file (83 of its names lack ".png" and must still match)
    assert df.loc[df["covid"] == 1, "lesions_known"].all()
    assert not df.loc[df["covid"] == 0, "lesions_known"].any()
    assert (df.loc[df["covid"] == 1, "patient"] != "").all()


def test_airbr_and_insepthi_are_not_dropped(data_dir):
    """The paper's code read AirBr/InSepThi as 0 (its binarizer spelled them Aibr/InSep). Here they are counted."""
    train = load_table("D0").query("split == 'train'")
    assert train["AirBr"].sum() == 8
    assert train["InSepThi"].sum() == 12
    assert train["GGO"].sum() == 108 and train["Csld"].sum() == 51 and train["CrPa"].sum() == 11


def test_aliases_are_accepted_explicitly(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text(HEADER + "x.png,CVD19,,,,Aibr,InSep\ny.png,CVD19,GGO,,,AirBr,InSepThi\n")
    df = parse_label_csv(f)
    assert df["AirBr"].tolist() == [1, 1] and df["InSepThi"].tolist() == [1, 1] and df["GGO"].tolist() == [0, 1]


@pytest.mark.parametrize("row", ["x.png,CVD19,,,,Airbr,", "x.png,CVD19,GGO,Csld,CrPa,AirBr,septal", "x.png,yes,,,,,"])
def test_unknown_label_names_file_and_line(tmp_path, row):
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + "ok.png,,,,,,\n" + row + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: column .*unknown label"):
        parse_label_csv(f)


def test_missing_column_is_an_error(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("imgname,CVD19,GGO,Csld,CrPa,AirBr\nx.png,,,,,\n")
    with pytest.raises(DataError, match=r"h\.csv:1: header lacks column\(s\) \['InSepThi'\]"):
        parse_label_csv(f)


def test_d0_plus_d1_uses_the_zips_present(data_dir):
    df = load_table("D0+D1")
    d1 = df[df["dataset"] == "D1"]
    assert len(d1) == 76 and d1["covid"].sum() == 35
    assert set(d1["split"]) == {"train", "val", "test"}
    # a patient never straddles two splits
    grouped = d1[d1["patient"] != ""].groupby("patient")["split"].nunique()
    assert (grouped == 1).all()
    assert d1["image"].str.contains(r"\.zip::").all()


def test_check_reports_counts(data_dir):
    r = check(verify=False)
    assert r["D0"] == {"covid": 349, "noncovid": 397, "split": {"train": 425, "val": 118, "test": 203}}
    assert r["D1"]["found"] == 76 and r["D1"]["of_paper"] == 478


def test_missing_data_dir_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("LADNN_DATA_DIR")
    with pytest.raises(DataError, match="LADNN_DATA_DIR"):
        load_table("D0")
    with pytest.raises(DataError, match="missing"):
        load_table("D0", tmp_path)


def test_source_of_names():
    assert source_of("2020.01.24.919183-p27-132.png") == "2020.01.24.919183"
    assert source_of("lungadenocarcinomas_LungCT-Diagnosis_004_30.png") == "lungadenocarcinomas_LungCT-Diagnosis"
    assert source_of("10.1148.radiol.2020200642-12.png") == "10.1148.radiol.2020200642"
    assert source_of("1%0.jpg") == "1"
    assert source_of("102.png") == ""


def test_subset_is_stratified():
    df = pd.DataFrame({"split": ["train"] * 10 + ["test"] * 10, "covid": [0, 1] * 10})
    s = subset(df, 4)
    assert len(s) == 8 and (s.groupby(["split", "covid"]).size() == 2).all()
