from molgnn.chem.stereo import stereo_counts


def test_counts_assigned_and_unassigned_centers():
    assert stereo_counts("C[C@H](N)C(=O)O") == (1, 0)
    assert stereo_counts("CC(N)C(=O)O") == (1, 1)
    assert stereo_counts("C[C@H](O)[C@@H](C)CC(C)O") == (3, 1)
    assert stereo_counts("not a smiles") == (0, 0)
    assert stereo_counts("") == (0, 0)
