"""Column names and file names shared by every stage.

Named constants, never bare strings, so a typo fails at import rather than as a late KeyError.
"""

# molecules.parquet: one row per kept molecule
MOL_ID = "mol_id"            # stable id: the standardized InChIKey
SMILES = "smiles"            # canonical SMILES of the standardized parent molecule
INCHIKEY = "inchikey"
SOURCE = "source"            # the file or named source the molecule was read from
ROW = "row"                  # 0-based record index within that source (header excluded)
RAW = "raw"                  # the input exactly as read (SMILES text or SDF record title)
N_DUPLICATES = "n_duplicates"  # later input rows that standardized to the same molecule
ATOMIC_NUMBERS = "atomic_numbers"  # given geometry, all atoms incl. H (list[int]) or null
POSITIONS = "positions"      # given geometry, Angstrom, flattened xyz (list[float]) or null
TOTAL_CHARGE = "total_charge"  # structures table: net formal charge (sets the electron count)

# rejects.csv: one row per input row that did not become a kept molecule
REJECT_COLUMNS = [SOURCE, ROW, RAW, "stage", "reason"]

MOLECULES_FILE = "molecules.parquet"
REJECTS_FILE = "rejects.csv"
UNITS_FILE = "units.json"    # {column: unit} for every target column

# Batch keys of the 3D (atomistic) pipeline follow schnetpack's `properties` names.
