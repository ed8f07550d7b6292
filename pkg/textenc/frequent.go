package textenc

import (
	"sync"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

// The most frequent characters of Chinese and Korean text. In the byte
// ranges where GBK, Big5 and EUC-KR overlap (most of them), these tell the
// three apart: text in one encoding read as another turns into characters
// that are valid but rare.
const (
	// frequentHanzi are the 500 most frequent Chinese characters (simplified
	// forms; those that are the same in traditional Chinese count for Big5).
	frequentHanzi = "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵连调深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越器容照须九增研写称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图念六引历首医局突专费号尽另周较注语仅考落青随选列"
	// frequentTraditional are frequent traditional forms that differ from
	// the simplified ones.
	frequentTraditional = "這個們來為國說時會對著過發後裡種經麼學現當沒動還進樣開從實軍無與長機點關業將兩間問應戰頭體見產話電數報場東聲員區張達難權邊師觀識導爭運飛風萬屬隊別結義處條氣題總計"
	// frequentHangul are frequent Korean syllables.
	frequentHangul = "이다는의에가을하고지한로기서리사자대도수있니시인어나해그일정게습들과요상보아라를으만주우장전제내여구부것성비원면없선국중적문말세계신유진연방실동위무생경되모화소학관공개미조야드거용안했었까때음저와할받간식금물회터치트스데님분려알번결당후오외명발산업초파체월년날점차통입왔같르루러목바속심질작노민감행영출합호히집태단건운불반른변편설별길양약증택근처활향예난담백령배본색쪽록"
)

// frequentSets holds the two-byte codes of the frequent characters per
// encoding, built on first use.
var frequentSets = sync.OnceValue(func() map[family]*codeSet {
	return map[family]*codeSet{
		familyGBK:   codes(simplifiedchinese.GBK, frequentHanzi),
		familyBig5:  codes(traditionalchinese.Big5, frequentHanzi+frequentTraditional),
		familyEUCKR: codes(korean.EUCKR, frequentHangul),
	}
})

// codeSet is a set of two-byte codes.
type codeSet [1 << 16 / 64]uint64

func (s *codeSet) has(code uint16) bool { return s[code/64]&(1<<(code%64)) != 0 }

// codes encodes each character of chars with e and keeps the two-byte
// codes; characters e cannot encode are left out.
func codes(e encoding.Encoding, chars string) *codeSet {
	set := new(codeSet)
	enc := e.NewEncoder()
	for _, r := range chars {
		b, err := enc.Bytes([]byte(string(r)))
		if err == nil && len(b) == 2 {
			code := uint16(b[0])<<8 | uint16(b[1])
			set[code/64] |= 1 << (code % 64)
		}
	}
	return set
}
