//! Embedded demographic tables for the synthetic patient generator: common
//! family and given names (including accented and non-Latin-1 spellings, so
//! that every layer is exercised with real Unicode), street names and US cities.
//!
//! The lists are invented from common-name frequency knowledge; they contain no
//! real person's record. Phone numbers use the fictional 555-01xx range and
//! SSN-like identifiers the never-issued 999 area, so nothing can collide with
//! a real person.

/// Common US family names of mostly European and African-American origin.
pub(super) const FAMILY_GENERAL: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
    "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis",
    "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Hill", "Green", "Adams",
    "Baker", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans",
    "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "Morgan", "Peterson", "Cooper",
    "Reed", "Bailey", "Bell", "Kelly", "Howard", "Ward", "Cox", "Richardson", "Wood", "Watson",
    "Brooks", "Bennett", "Gray", "James", "Hughes", "Price", "Myers", "Long", "Foster", "Sanders",
    "Ross", "Powell", "Sullivan", "Russell", "Ortiz", "Jenkins", "Perry", "Butler", "Barnes", "Fisher",
    "Henderson", "Coleman", "Simmons", "Patterson", "Jordan", "Reynolds", "Hamilton", "Graham", "Kim", "Wallace",
    "Woods", "Cole", "West", "Owens", "Marshall", "Harrison", "Gibson", "McDonald", "Cruz", "Ellis",
    "Stevens", "Murray", "Ford", "Wells", "Hayes", "Chapman", "Hunt", "Black", "Holmes", "Palmer",
    "Stone", "Meyer", "Boyd", "Mills", "Warren", "Fox", "Rose", "Rice", "Schmidt", "Hansen",
    "O'Brien", "O'Connor", "McCarthy", "Fitzgerald", "Kowalski", "Nowak", "Wiśniewski", "Dąbrowski", "Schröder", "Müller",
    "Schäfer", "Köhler", "Groß", "Weiß", "Jäger", "Sørensen", "Østergaard", "Åberg", "Lindqvist", "Björk",
    "Dubois", "Lefèvre", "Bérubé", "Gagné", "Côté", "Leblanc", "Caron", "Rossi", "Esposito", "Bianchi",
    "Romano", "Ricci", "Conti", "De Luca", "Costa", "Van der Berg", "De Vries", "Jansen", "Novák", "Dvořák",
    "Horváth", "Szabó", "Papadopoulos", "Ivanov", "Petrov", "Kuznetsova", "Cohen", "Levi", "Friedman", "Katz",
];

/// Common family names of Hispanic origin, many with accents.
pub(super) const FAMILY_HISPANIC: &[&str] = &[
    "García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Sánchez", "Ramírez", "Torres",
    "Flores", "Rivera", "Gómez", "Díaz", "Reyes", "Morales", "Gutiérrez", "Ortiz", "Chávez", "Ramos",
    "Ruiz", "Álvarez", "Mendoza", "Vásquez", "Castillo", "Jiménez", "Moreno", "Romero", "Herrera", "Medina",
    "Aguilar", "Vargas", "Guzmán", "Muñoz", "Núñez", "Peña", "Domínguez", "Fernández", "Delgado", "Ibáñez",
    "Castañeda", "Figueroa", "Salazar", "Cortés", "Soto", "Contreras", "Luna", "Ríos", "Acosta", "Zúñiga",
];

/// Common family names of Asian origin (Vietnamese with their diacritics).
pub(super) const FAMILY_ASIAN: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng", "Bùi", "Kim", "Park",
    "Choi", "Jung", "Kang", "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang",
    "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma", "Zhu", "Hu", "Lin", "Tanaka",
    "Suzuki", "Watanabe", "Sato", "Patel", "Singh", "Shah", "Kumar", "Gupta", "Reddy", "Iyer",
];

/// Male given names.
pub(super) const GIVEN_MALE: &[&str] = &[
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles",
    "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua",
    "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Edward", "Jason", "Jeffrey", "Ryan",
    "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott", "Brandon",
    "Benjamin", "Samuel", "Gregory", "Alexander", "Frank", "Patrick", "Raymond", "Jack", "Dennis", "Jerry",
    "Tyler", "Aaron", "Henry", "Adam", "Douglas", "Nathan", "Peter", "Zachary", "Kyle", "Walter",
    "Harold", "Jeremy", "Ethan", "Carl", "Keith", "Roger", "Gerald", "Christian", "Terry", "Sean",
    "Arthur", "Austin", "Noah", "Lawrence", "Jesse", "Joe", "Bryan", "Billy", "Jordan", "Albert",
    "Dylan", "Bruce", "Willie", "Gabriel", "Alan", "Juan", "Logan", "Wayne", "Ralph", "Roy",
    "Eugene", "Randy", "Vincent", "Russell", "Louis", "Philip", "Bobby", "Johnny", "Bradley", "Liam",
    "André", "Björn", "Søren", "François", "Jürgen", "Zoltán", "Mikołaj", "Olaf", "Dmitri", "Minh",
];

/// Female given names.
pub(super) const GIVEN_FEMALE: &[&str] = &[
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly", "Emily", "Donna", "Michelle",
    "Carol", "Amanda", "Dorothy", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia",
    "Kathleen", "Amy", "Angela", "Shirley", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen",
    "Samantha", "Katherine", "Christine", "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "Maria", "Heather",
    "Diane", "Ruth", "Julie", "Olivia", "Joyce", "Virginia", "Victoria", "Kelly", "Lauren", "Christina",
    "Joan", "Evelyn", "Judith", "Megan", "Andrea", "Cheryl", "Hannah", "Jacqueline", "Martha", "Gloria",
    "Teresa", "Ann", "Sara", "Madison", "Frances", "Kathryn", "Janice", "Jean", "Abigail", "Alice",
    "Judy", "Sophia", "Grace", "Denise", "Amber", "Doris", "Marilyn", "Danielle", "Beverly", "Isabella",
    "Theresa", "Diana", "Natalie", "Brittany", "Charlotte", "Marie", "Kayla", "Alexis", "Lori", "Ava",
    "Zoë", "Chloé", "Renée", "Noémie", "Anaïs", "Ingrid", "Åsa", "Małgorzata", "Hélène", "Thảo",
];

/// Male given names common among Hispanic families.
pub(super) const GIVEN_MALE_HISPANIC: &[&str] = &[
    "José", "Luis", "Carlos", "Jesús", "Miguel", "Ángel", "Raúl", "Jorge", "Francisco", "Alejandro",
    "Antonio", "Manuel", "Pedro", "Ramón", "Sergio", "Andrés", "Fernando", "Héctor", "Óscar", "Rubén",
    "Javier", "Eduardo", "Víctor", "Mateo", "Santiago", "Diego", "Joaquín", "Martín", "Tomás", "Iván",
];

/// Female given names common among Hispanic families.
pub(super) const GIVEN_FEMALE_HISPANIC: &[&str] = &[
    "María", "Guadalupe", "Sofía", "Lucía", "Valentina", "Camila", "Inés", "Rosa", "Ana", "Carmen",
    "Verónica", "Mónica", "Patricia", "Alejandra", "Gabriela", "Leticia", "Beatriz", "Dolores", "Mariana", "Ximena",
    "Natalia", "Isabel", "Elena", "Adriana", "Raquel", "Araceli", "Yesenia", "Marisol", "Begoña", "Julia",
];

/// Street names; combined with [`STREET_SUFFIX`] and a house number.
pub(super) const STREETS: &[&str] = &[
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Walnut",
    "Park", "Sunset", "Lincoln", "Jackson", "Church", "River", "Highland", "Willow", "Chestnut", "Spruce",
    "Meadow", "Forest", "Franklin", "Jefferson", "Ridge", "Spring", "Cherry", "Madison", "Adams", "Birch",
    "Mill", "Prospect", "Center", "Lakeview", "Fairview", "Hickory", "Dogwood", "Magnolia", "Sycamore", "Juniper",
];

/// Street type suffixes.
pub(super) const STREET_SUFFIX: &[&str] = &["St", "Ave", "Rd", "Ln", "Dr", "Ct", "Blvd", "Way", "Pl", "Ter"];

/// A city with its state, the first three digits of its ZIP codes, its
/// telephone area code, approximate coordinates and standard UTC offset.
pub(super) struct City {
    pub(super) name: &'static str,
    pub(super) state: &'static str,
    pub(super) zip3: &'static str,
    pub(super) area_code: &'static str,
    /// Latitude and longitude in millionths of a degree (kept integral so
    /// the written decimals are exact and reproducible).
    pub(super) lat_micro: i64,
    pub(super) lon_micro: i64,
    /// Offset written in dateTime values, e.g. `-05:00`.
    pub(super) utc_offset: &'static str,
}

const fn city(
    name: &'static str,
    state: &'static str,
    zip3: &'static str,
    area_code: &'static str,
    lat_micro: i64,
    lon_micro: i64,
    utc_offset: &'static str,
) -> City {
    City { name, state, zip3, area_code, lat_micro, lon_micro, utc_offset }
}

/// US cities where synthetic patients live.
pub(super) const CITIES: &[City] = &[
    city("Boston", "MA", "021", "617", 42_360_100, -71_058_900, "-05:00"),
    city("Worcester", "MA", "016", "508", 42_262_600, -71_802_300, "-05:00"),
    city("Springfield", "MA", "011", "413", 42_101_500, -72_589_800, "-05:00"),
    city("Providence", "RI", "029", "401", 41_824_000, -71_412_800, "-05:00"),
    city("Hartford", "CT", "061", "860", 41_765_800, -72_673_400, "-05:00"),
    city("Albany", "NY", "122", "518", 42_652_600, -73_756_200, "-05:00"),
    city("Buffalo", "NY", "142", "716", 42_886_400, -78_878_400, "-05:00"),
    city("Philadelphia", "PA", "191", "215", 39_952_600, -75_165_200, "-05:00"),
    city("Pittsburgh", "PA", "152", "412", 40_440_600, -79_995_900, "-05:00"),
    city("Baltimore", "MD", "212", "410", 39_290_400, -76_612_200, "-05:00"),
    city("Richmond", "VA", "232", "804", 37_540_700, -77_436_000, "-05:00"),
    city("Raleigh", "NC", "276", "919", 35_779_600, -78_638_200, "-05:00"),
    city("Atlanta", "GA", "303", "404", 33_749_000, -84_388_000, "-05:00"),
    city("Miami", "FL", "331", "305", 25_761_700, -80_191_800, "-05:00"),
    city("Tampa", "FL", "336", "813", 27_950_600, -82_457_200, "-05:00"),
    city("Columbus", "OH", "432", "614", 39_961_200, -82_998_800, "-05:00"),
    city("Detroit", "MI", "482", "313", 42_331_400, -83_045_800, "-05:00"),
    city("Chicago", "IL", "606", "312", 41_878_100, -87_629_800, "-06:00"),
    city("Milwaukee", "WI", "532", "414", 43_038_900, -87_906_500, "-06:00"),
    city("Minneapolis", "MN", "554", "612", 44_977_800, -93_265_000, "-06:00"),
    city("St. Louis", "MO", "631", "314", 38_627_000, -90_199_400, "-06:00"),
    city("Nashville", "TN", "372", "615", 36_162_700, -86_781_600, "-06:00"),
    city("New Orleans", "LA", "701", "504", 29_951_100, -90_071_500, "-06:00"),
    city("Houston", "TX", "770", "713", 29_760_400, -95_369_800, "-06:00"),
    city("San Antonio", "TX", "782", "210", 29_424_100, -98_493_600, "-06:00"),
    city("El Paso", "TX", "799", "915", 31_761_900, -106_485_000, "-07:00"),
    city("Denver", "CO", "802", "303", 39_739_200, -104_990_300, "-07:00"),
    city("Albuquerque", "NM", "871", "505", 35_084_400, -106_650_400, "-07:00"),
    city("Phoenix", "AZ", "850", "602", 33_448_400, -112_074_000, "-07:00"),
    city("Salt Lake City", "UT", "841", "801", 40_760_800, -111_891_000, "-07:00"),
    city("Las Vegas", "NV", "891", "702", 36_169_900, -115_139_800, "-08:00"),
    city("Los Angeles", "CA", "900", "213", 34_052_200, -118_243_700, "-08:00"),
    city("San José", "CA", "951", "408", 37_338_200, -121_886_300, "-08:00"),
    city("Fresno", "CA", "937", "559", 36_737_800, -119_787_100, "-08:00"),
    city("Portland", "OR", "972", "503", 45_515_200, -122_678_400, "-08:00"),
    city("Seattle", "WA", "981", "206", 47_606_200, -122_332_100, "-08:00"),
];

/// Organisation name stems for the clinics patients are seen at.
pub(super) const CLINIC_STEMS: &[&str] = &[
    "Riverside", "Hearthstone", "Maple Grove", "Lakeside", "Cedar Hill", "Northgate", "Harborview", "Valley",
    "Summit", "Brookside", "Pinecrest", "Fairmont",
];
