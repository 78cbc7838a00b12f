"""Class vocabularies of the supported CXR datasets, in their canonical (contiguous id) order."""

# VinDr-CXR's 14 local findings; position = contiguous category id 0..13 everywhere in the package.
VINDR_CXR_CLASSES = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)

# VinDr-CXR's image-level label for normal studies (class_id 14 in the release); never a box class.
NO_FINDING = "No finding"

# The 8 findings of NIH ChestX-ray14's box-annotated subset (BBox_List_2017.csv), ids 0..7.
NIH_CXR14_BBOX_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
