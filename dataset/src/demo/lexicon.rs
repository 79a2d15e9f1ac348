//! The vocabularies and sentence templates of the demo data, written for this project: garment
//! types, the attribute keys with their values, the advertising clauses (the task the demo
//! P-Tuning learns) and the plain phrases of the pre-training text.
//!
//! Every clause template holds `{v}` where the attribute value goes. The advertising clauses and
//! the plain phrases share their words on purpose: the base model must have produced every token
//! of an advertisement during pre-training (the prefix cannot train output rows), so the ad task
//! differs from the pre-training text in how phrases are chosen and ordered, not in its tokens.
//! Punctuation is ASCII `,` `:` `?` plus `、` `。`, which NFKC (the demo tokenizer's
//! normaliser) leaves unchanged, so every text survives encode → decode exactly.

/// Which attribute keys a garment can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    Dress,
    Skirt,
    Top,
    Outer,
    Pants,
}

impl Group {
    /// The measure word of the group (`这条裙子`, `这件衬衫`).
    pub(super) fn measure(self) -> &'static str {
        match self {
            Group::Dress | Group::Skirt | Group::Pants => "条",
            Group::Top | Group::Outer => "件",
        }
    }

    /// What kind of clothing it is, for the plain descriptions.
    pub(super) fn category(self) -> &'static str {
        match self {
            Group::Dress | Group::Skirt => "裙装",
            Group::Top => "上衣",
            Group::Outer => "外搭",
            Group::Pants => "裤装",
        }
    }
}

/// The `类型` values.
pub(super) const GARMENTS: &[(&str, Group)] = &[
    ("连衣裙", Group::Dress),
    ("吊带裙", Group::Dress),
    ("衬衫裙", Group::Dress),
    ("半身裙", Group::Skirt),
    ("百褶裙", Group::Skirt),
    ("衬衫", Group::Top),
    ("T恤", Group::Top),
    ("卫衣", Group::Top),
    ("毛衣", Group::Top),
    ("针织衫", Group::Top),
    ("外套", Group::Outer),
    ("风衣", Group::Outer),
    ("夹克", Group::Outer),
    ("大衣", Group::Outer),
    ("牛仔裤", Group::Pants),
    ("阔腿裤", Group::Pants),
    ("休闲裤", Group::Pants),
];

/// The key of the garment type, always first in a content string.
pub(super) const TYPE_KEY: &str = "类型";

/// One attribute key: its values, the groups that have it, two advertising clauses and two plain
/// phrases (both with `{v}`).
pub(super) struct Key {
    pub name: &'static str,
    pub values: &'static [&'static str],
    pub groups: &'static [Group],
    pub ad: [&'static str; 2],
    pub plain: [&'static str; 2],
}

const ALL: &[Group] = &[
    Group::Dress,
    Group::Skirt,
    Group::Top,
    Group::Outer,
    Group::Pants,
];

/// The attribute keys after `类型`, in the order they appear in content strings and ads.
pub(super) const KEYS: &[Key] = &[
    Key {
        name: "颜色",
        values: &[
            "红色",
            "白色",
            "黑色",
            "蓝色",
            "绿色",
            "粉色",
            "米色",
            "灰色",
            "紫色",
            "黄色",
            "藏青色",
            "卡其色",
        ],
        groups: ALL,
        ad: ["选用{v}作为主色", "以{v}为主色调"],
        plain: ["颜色是{v}", "{v}很耐看"],
    },
    Key {
        name: "材质",
        values: &[
            "棉麻",
            "纯棉",
            "真丝",
            "羊毛",
            "雪纺",
            "牛仔布",
            "灯芯绒",
            "亚麻",
            "蕾丝",
            "针织",
        ],
        groups: ALL,
        ad: ["采用{v}面料", "{v}面料柔软舒适"],
        plain: ["面料是{v}", "用{v}做成"],
    },
    Key {
        name: "风格",
        values: &[
            "复古", "简约", "甜美", "通勤", "休闲", "街头", "文艺", "优雅", "运动", "学院",
        ],
        groups: ALL,
        ad: ["{v}风格十足", "透出{v}气息"],
        plain: ["属于{v}风格", "偏{v}一些"],
    },
    Key {
        name: "图案",
        values: &[
            "格子", "条纹", "碎花", "波点", "几何", "印花", "刺绣", "字母", "拼色",
        ],
        groups: ALL,
        ad: ["{v}图案很吸睛", "点缀{v}图案"],
        plain: ["上面是{v}图案", "图案是{v}"],
    },
    Key {
        name: "版型",
        values: &["宽松", "修身", "直筒", "收腰", "落肩", "短款"],
        groups: ALL,
        ad: ["{v}版型更显身材", "{v}剪裁干净利落"],
        plain: ["版型偏{v}", "是{v}的版型"],
    },
    Key {
        name: "领型",
        values: &["圆领", "V领", "翻领", "立领", "方领", "连帽"],
        groups: &[Group::Dress, Group::Top, Group::Outer],
        ad: ["{v}设计修饰脸型", "搭配{v}更显精神"],
        plain: ["领口是{v}", "做了{v}"],
    },
    Key {
        name: "袖长",
        values: &["短袖", "长袖", "七分袖", "无袖", "泡泡袖"],
        groups: &[Group::Dress, Group::Top],
        ad: ["{v}设计清爽自在", "{v}方便活动"],
        plain: ["袖子是{v}", "做成了{v}"],
    },
    Key {
        name: "裙长",
        values: &["短款", "中长款", "长款", "及膝"],
        groups: &[Group::Dress, Group::Skirt],
        ad: ["{v}裙摆显高挑", "{v}的裙长刚刚好"],
        plain: ["裙长是{v}", "长度是{v}"],
    },
    Key {
        name: "裤长",
        values: &["九分裤", "七分裤", "长裤", "短裤"],
        groups: &[Group::Pants],
        ad: ["{v}的长度刚刚好", "做成{v}更显腿长"],
        plain: ["长度是{v}", "是一条{v}"],
    },
    Key {
        name: "细节",
        values: &[
            "口袋",
            "系带",
            "褶皱",
            "拉链",
            "纽扣",
            "荷叶边",
            "开叉",
            "蝴蝶结",
            "木耳边",
        ],
        groups: ALL,
        ad: ["{v}细节增添亮点", "加入{v}细节"],
        plain: ["有{v}的细节", "带着{v}"],
    },
    Key {
        name: "场合",
        values: &["约会", "上班", "旅行", "聚会", "度假", "校园", "居家"],
        groups: ALL,
        ad: ["很适合{v}时穿", "{v}穿也很合适"],
        plain: ["可以在{v}时穿", "适合{v}"],
    },
];

/// Openers of an advertisement (`{m}` measure word, `{t}` garment).
pub(super) const AD_OPENERS: &[&str] = &["这{m}{t}", "这款{t}"];

/// Closing clauses of an advertisement.
pub(super) const AD_CLOSINGS: &[&str] = &["上身很有气质", "日常穿搭很百搭", "让人一眼就爱上"];

/// Free sentences of the pre-training text about one garment (`{t}`, `{m}`, `{c}` category) —
/// they also carry the advertising openers and closings, outside the ad task.
pub(super) const PLAIN_SENTENCES: &[&str] = &[
    "这{m}{t}上身很有气质",
    "这款{t}日常穿搭很百搭",
    "{t}是很常见的{c}",
    "很多人的衣柜里都有{t}",
    "挑{t}时要看面料和版型",
    "这款{t}让人一眼就爱上",
    "{t}换季时也能穿",
];

/// Index of `颜色` in [`KEYS`].
pub(super) const COLOUR: usize = 0;

/// Questions of the pre-training Q&A rows about a key (index into [`KEYS`]; `{t}` garment).
pub(super) const QUESTIONS: &[(usize, &str)] = &[
    (COLOUR, "{t}有哪些颜色?"),
    (1, "{t}常用什么面料?"),
    (KEYS.len() - 1, "{t}适合什么场合?"),
    (3, "{t}有哪些图案?"),
    (2, "{t}可以是什么风格?"),
];

/// Prompt of the pre-training rows that ask for free text.
pub(super) const WRITE_PROMPT: &str = "写一句话";

/// Prompt prefix of the pre-training continuation rows.
pub(super) const CONTINUE_PROMPT: &str = "续写:";

/// Prompt of the pre-training intro rows (`{v}` colour, `{t}` garment).
pub(super) const INTRO_PROMPT: &str = "介绍一下{v}的{t}";
