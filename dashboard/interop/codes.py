"""The codes and identifiers of our FHIR R4 representation, defined once for import, export and the docs.

Standard codes (LOINC, SNOMED CT) are used where one exists and was checked against a public listing;
everything else is in a local code system under `BASE`, documented in docs/interoperability.md. No
terminology server is contacted at run time: these tables are the whole vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.clinical.mrc import MRC_TOKENS, MUSCLE_LABELS, MUSCLES
from dashboard.clinical.records.format import LUMBAR_SEGMENTS, VISIT_BOOLEANS, VISIT_SIGN_BOOLEANS

BASE = "https://spine-dashboard.example/fhir"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier type (MR = medical record number)
V2_0136 = "http://terminology.hl7.org/CodeSystem/v2-0136"  # yes/no indicator (Y, N)
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"  # encounter class (AMB = ambulatory)
CPT = "http://www.ama-assn.org/go/cpt"  # FHIR's URI for AMA CPT
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"  # FHIR's URI for ICD-10-PCS
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"  # security labels

#: Local code systems (CodeSystem.url) and what they hold.
CS_OBSERVATION = f"{BASE}/CodeSystem/observation"
CS_KEY_MUSCLE = f"{BASE}/CodeSystem/key-muscle"
CS_MRC_GRADE = f"{BASE}/CodeSystem/mrc-grade"
CS_LUMBAR_SEGMENT = f"{BASE}/CodeSystem/lumbar-segment"
CS_CHECKLIST_RULE = f"{BASE}/CodeSystem/checklist-rule"
CS_ENCOUNTER_TYPE = f"{BASE}/CodeSystem/encounter-type"  # `spine-follow-up`: a visit of the records

#: The Encounter.type of a records visit: other Encounters of a whole record never become empty visits.
VISIT_TYPE = "spine-follow-up"

#: Local extensions (StructureDefinition.url).
EXT_INSTRUMENTED = f"{BASE}/StructureDefinition/instrumented"
EXT_REVISION = f"{BASE}/StructureDefinition/revision"
EXT_DEFICIT_ONSET = f"{BASE}/StructureDefinition/deficit-onset-date"
EXT_LATERALITY = f"{BASE}/StructureDefinition/laterality"
EXT_SURGEON = f"{BASE}/StructureDefinition/responsible-surgeon"
EXT_EXTRA_COLUMN = f"{BASE}/StructureDefinition/extra-column"

#: Identifier systems.
ID_PATIENT = f"{BASE}/sid/patient-id"  # the pseudonymous records patient_id
ID_MRN = f"{BASE}/sid/mrn"  # a clinic's MRN, exported only on request

#: Side → the R4 base value set `bodysite-laterality` (SNOMED CT; tests/fixtures/hl7-r4/
#: valueset-bodysite-laterality.json), written first, and the SNOMED CT laterality qualifier (mCODE
#: laterality-qualifier value set), written as a second coding for systems that use the qualifiers.
LATERALITY = {"L": ("419161000", "Unilateral left"), "R": ("419465000", "Unilateral right")}
LATERALITY_QUALIFIER = {"L": ("7771000", "Left"), "R": ("24028007", "Right")}
BILATERAL = "51440002"  # both sides: one Observation read as a left and a right grade
SIDE_BY_LATERALITY = {code: side for table in (LATERALITY, LATERALITY_QUALIFIER)
                      for side, (code, _) in table.items()}
#: Extensions that carry laterality on a bodySite: ours and mCODE's (HL7 US mCODE STU4, R4).
EXT_LATERALITY_MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-laterality-qualifier"

#: Security label of a pseudonymous export (v3 ObservationValue PSEUDED, "pseudonymized").
PSEUDONYMIZED = {"system": V3_OBSERVATION_VALUE, "code": "PSEUDED", "display": "pseudonymized"}

#: Procedures that are spine operations (the rest of a whole record is skipped and counted). Codes only
#: from what could be checked; docs/interoperability.md gives the source of each.
SPINE_SNOMED = {
    "55705006": "Spinal fusion",
}
SPINE_CPT = {
    "22558": "Arthrodesis, anterior interbody technique, lumbar",
    "22585": "Arthrodesis, anterior interbody, each additional interspace",
    "22612": "Arthrodesis, posterior or posterolateral technique, lumbar",
    "22614": "Arthrodesis, posterior or posterolateral technique, each additional vertebral segment",
    "22630": "Arthrodesis, posterior interbody technique, lumbar",
    "22632": "Arthrodesis, posterior interbody technique, each additional interspace",
    "22633": "Arthrodesis, combined posterior or posterolateral and posterior interbody technique, lumbar",
    "22634": "Arthrodesis, combined technique, each additional interspace and segment",
    "63005": "Laminectomy, lumbar, 1 or 2 vertebral segments (no facetectomy, foraminotomy or discectomy)",
    "63012": "Laminectomy with removal of abnormal facets and pars inter-articularis, lumbar",
    "63017": "Laminectomy, more than 2 vertebral segments, lumbar",
    "63030": "Laminotomy with decompression of nerve root(s), 1 interspace, lumbar",
    "63035": "Laminotomy, each additional interspace, cervical or lumbar",
    "63042": "Laminotomy, reexploration, single interspace, lumbar",
    "63047": "Laminectomy, facetectomy and foraminotomy, single vertebral segment, lumbar",
    "63048": "Laminectomy, facetectomy and foraminotomy, each additional segment",
}
#: CPT add-on codes for spinal instrumentation: such a Procedure is instrumented.
INSTRUMENTATION_CPT = {
    "22840": "Posterior non-segmental instrumentation",
    "22842": "Posterior segmental instrumentation, 3 to 6 vertebral segments",
    "22843": "Posterior segmental instrumentation, 7 to 12 vertebral segments",
    "22844": "Posterior segmental instrumentation, 13 or more vertebral segments",
    "22845": "Anterior instrumentation, 2 to 3 vertebral segments",
    "22853": "Insertion of interbody biomechanical device(s)",
}
#: ICD-10-PCS roots (first 4 characters of the 7): Fusion (G) in Lower Joints (0S) of a lumbar joint.
SPINE_ICD10PCS_ROOTS = {
    "0SG0": "Fusion of Lumbar Vertebral Joint",
    "0SG1": "Fusion of 2 or more Lumbar Vertebral Joints",
    "0SG3": "Fusion of Lumbosacral Joint",
}

#: records sex ↔ FHIR administrative gender.
GENDER = {"F": "female", "M": "male", "X": "other"}
SEX_BY_GENDER = {"female": "F", "male": "M", "other": "X", "unknown": None}

MRC_GRADE_CODES: tuple[str, ...] = tuple(MRC_TOKENS)
MUSCLE_CODES: tuple[str, ...] = MUSCLES
SEGMENT_CODES: tuple[str, ...] = LUMBAR_SEGMENTS


@dataclass(frozen=True)
class ObservationCode:
    """One kind of Observation: the records column it carries and how it is coded."""

    column: str  # records column (strength: 'mrc')
    file: str  # 'patients', 'strength' or 'visits'
    local: str  # code in CS_OBSERVATION
    display: str
    value: str  # 'grade' | 'number' | 'boolean' | 'text'
    category: str | None = None  # observation-category code
    standard: tuple[tuple[str, str, str], ...] = ()  # (system, code, display), checked codes only
    unit: str | None = None  # UCUM code for numbers


_FINDING_CODES = {
    # SNOMED CT findings, each checked in at least one public code listing (docs/interoperability.md).
    "fever": ("386661006", "Fever"),
    "urinary_retention": ("267064002", "Retention of urine"),
    "fecal_incontinence": ("72042002", "Incontinence of feces"),
    "numbness": ("44077006", "Numbness"),
}
_FINDING_DISPLAY = {
    "radicular_pain": "Radiating (radicular) leg pain present",
    "numbness": "New or worse numbness in a dermatome",
    "saddle_anesthesia": "Saddle anaesthesia",
    "urinary_retention": "Urinary retention",
    "fecal_incontinence": "Faecal incontinence",
    "fever": "Fever (temperature 38.0 °C or more)",
    "wound_drainage": "Persistent wound drainage or wound breakdown",
    "calf_swelling": "Unilateral calf swelling or tenderness",
    "screw_lucency": "Lucency around a pedicle screw on radiograph",
    "implant_migration": "Implant migration on radiograph",
    "rod_fracture": "Rod fracture on radiograph",
    "anal_tone_reduced": "Reduced anal tone",
    "perianal_sensation_reduced": "Reduced perianal sensation",
    "altered_mentation": "Altered mentation (qSOFA criterion)",
}
_IMAGING_FINDINGS = {"screw_lucency", "implant_migration", "rod_fracture"}

OBSERVATIONS: tuple[ObservationCode, ...] = (
    ObservationCode("mrc", "strength", "mrc-strength", "Muscle strength, MRC grade (0-5)", "grade", "exam"),
    ObservationCode("diabetes", "patients", "diabetes", "Diabetes mellitus present", "boolean"),
    ObservationCode("smoker", "patients", "smoker", "Current smoker", "boolean", "social-history"),
    ObservationCode("leg_pain_nrs", "visits", "leg-pain-nrs", "Leg pain, numeric rating scale 0-10", "number",
                    "survey", ((LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),),
                    "{score}"),
    ObservationCode("back_pain_nrs", "visits", "back-pain-nrs", "Back pain, numeric rating scale 0-10", "number",
                    "survey", ((LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),),
                    "{score}"),
    ObservationCode("odi", "visits", "odi", "Oswestry Disability Index (%)", "number", "survey",
                    ((LOINC, "97909-6", "Oswestry disability index score ODI"),), "%"),
    *(ObservationCode(name, "visits", name.replace("_", "-"), _FINDING_DISPLAY[name], "boolean",
                      "imaging" if name in _IMAGING_FINDINGS else "exam",
                      ((SNOMED, *_FINDING_CODES[name]),) if name in _FINDING_CODES else ())
      for name in (*VISIT_BOOLEANS, *VISIT_SIGN_BOOLEANS)),
    ObservationCode("respiratory_rate", "visits", "respiratory-rate", "Respiratory rate (breaths/min)", "number",
                    "vital-signs", (), "/min"),
    ObservationCode("systolic_bp", "visits", "systolic-bp", "Systolic blood pressure (mmHg)", "number",
                    "vital-signs", (), "mm[Hg]"),
    ObservationCode("crp_mg_l", "visits", "crp", "C-reactive protein (mg/L)", "number", "laboratory",
                    ((LOINC, "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma"),), "mg/L"),
    ObservationCode("notes", "visits", "visit-note", "Free-text visit note (identifying)", "text", "exam"),
)
OBSERVATION_BY_LOCAL = {o.local: o for o in OBSERVATIONS}
OBSERVATION_BY_COLUMN = {(o.file, o.column): o for o in OBSERVATIONS}
#: Standard codes that identify one kind of Observation unambiguously. LOINC 72514-3 is shared by leg and
#: back pain, so it identifies neither: such an Observation needs our local code as well.
OBSERVATION_BY_STANDARD: dict[tuple[str, str], ObservationCode] = {}
_AMBIGUOUS_STANDARD: set[tuple[str, str]] = set()
for _obs in OBSERVATIONS:
    for _system, _code, _ in _obs.standard:
        if (_system, _code) in OBSERVATION_BY_STANDARD:
            _AMBIGUOUS_STANDARD.add((_system, _code))
        OBSERVATION_BY_STANDARD[(_system, _code)] = _obs
for _key in _AMBIGUOUS_STANDARD:
    del OBSERVATION_BY_STANDARD[_key]
AMBIGUOUS_STANDARD: frozenset[tuple[str, str]] = frozenset(_AMBIGUOUS_STANDARD)

MUSCLE_DISPLAY = MUSCLE_LABELS
MRC_GRADE_DISPLAY = {
    "0": "No contraction", "1": "Flicker or trace of contraction", "2": "Active movement, gravity eliminated",
    "3": "Active movement against gravity", "4-": "Against slight resistance", "4": "Against moderate resistance",
    "4+": "Against strong resistance", "5-": "Barely detectable weakness", "5": "Normal power",
}
